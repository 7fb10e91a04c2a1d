//! Builds the XDP program from source (edge-ebpf, with nightly and bpf-linker) into OUT_DIR so
//! the `edge` binary embeds it. Set AYA_BUILD_SKIP=1 for host-only checks such as clippy.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-ebpf");
    let root = root.to_str().context("non-UTF-8 path to edge-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "edge-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
