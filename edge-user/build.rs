//! Builds the XDP program from source (edge-ebpf, with nightly and bpf-linker) into OUT_DIR so
//! the `edge` binary embeds it, and generates the gRPC code from proto/edge/v1/edge.proto.
//! Set AYA_BUILD_SKIP=1 for host-only builds (clippy, the fuzz targets): the program objects
//! are then empty, and loading the filter fails with a clear error.
use anyhow::Context as _;
use prost::Message as _;

fn main() -> anyhow::Result<()> {
    git_revision();
    compile_api()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-ebpf");
    let toolchain = ebpf_toolchain(&root.join("rust-toolchain.toml"))?;
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        for object in ["edge", "baseline"] {
            std::fs::write(out.join(object), [])?;
        }
    }
    let root = root.to_str().context("non-UTF-8 path to edge-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "edge-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    // The bench's reference programs (edge-ebpf's `baseline` binary) are built with the filter
    // but are not part of this library: the tests crate embeds them from here.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:baseline={}", out.join("baseline").display());
    Ok(())
}

/// The pinned nightly the eBPF crate is built with: `channel` in its rust-toolchain.toml.
fn ebpf_toolchain(file: &std::path::Path) -> anyhow::Result<String> {
    println!("cargo:rerun-if-changed={}", file.display());
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("channel"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_string())
        .with_context(|| format!("{}: no `channel = \"...\"` line", file.display()))
}

/// protox compiles the .proto in Rust, so building needs no protoc; the descriptor set is also
/// embedded for server reflection.
fn compile_api() -> anyhow::Result<()> {
    let proto = "proto/edge/v1/edge.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).context("compiling the API .proto")?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("edge_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .type_attribute(".edge.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)
        .context("generating the API code")
}

/// `edge --version` names the commit it was built from: EDGE_GIT_REV if set (a source tarball's
/// packager), else `git rev-parse`, else "unknown". Rebuilt when HEAD moves.
fn git_revision() {
    println!("cargo:rerun-if-env-changed=EDGE_GIT_REV");
    let git_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    for watched in ["HEAD", "refs", "packed-refs"] {
        if git_dir.join(watched).exists() {
            println!("cargo:rerun-if-changed={}", git_dir.join(watched).display());
        }
    }
    let rev = std::env::var("EDGE_GIT_REV").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=EDGE_GIT_REV={}", rev.as_deref().unwrap_or("unknown"));
}
