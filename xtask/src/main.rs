//! Project tasks cargo cannot express: set up a fresh machine, run all tests (privileged ones
//! included), run the namespace demo, and benchmark the program in the kernel.
//!
//! Kept free of the workspace's BPF crates so it builds before bpf-linker is installed.
use std::process::Command;

use anyhow::{bail, Context as _, Result};

mod package;
use clap::{Parser, Subcommand};

/// The fuzz targets in fuzz/fuzz_targets, and how long `cargo xtask test` runs each.
const FUZZ_TARGETS: [&str; 5] = ["config", "import", "ticket", "store", "pcap"];
const FUZZ_SECS_IN_TEST: u64 = 20;
/// cargo-fuzz, installed by `cargo xtask fuzz` and `test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The bpf-linker release that links with nightly's LLVM on these machines (see README).
const BPF_LINKER_VERSION: &str = "0.10.3";
/// Debian packages the tests and demo use: ip (netns, veth), nsenter, a real Redis for the
/// admission feed's tests, and promtool (in `prometheus`) to check the metrics exposition.
/// nftables is the baseline the lab benchmark compares against; systemd's `systemd-analyze`
/// checks the unit file; tcpdump makes the captures `edge replay` is tested on; binutils' strip
/// takes the debug info out of the packaged binary.
const APT_PACKAGES: [&str; 9] = [
    "iproute2",
    "util-linux",
    "redis-server",
    "prometheus",
    "nftables",
    "ethtool",
    "systemd",
    "tcpdump",
    "binutils",
];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs: nightly rust-src, bpf-linker, apt packages.
    Setup,
    /// Set up, then run every test (privileged ones need root; EDGE_SKIP_PRIVILEGED=1 skips them).
    Test,
    /// Set up, then run the namespace demo: a lab, the filter, real traffic, the counters.
    Demo,
    /// Set up, then benchmark the program in the kernel (BPF_PROG_TEST_RUN) and the control
    /// plane (cold start, day roll, API) through the real daemon.
    Bench {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Instead: the namespace lab under live floods: edge against nftables and reference
        /// XDP programs, then a SYN flood against edge with and without cookies and the kernel
        /// alone (about 20 min).
        #[arg(long)]
        lab: bool,
    },
    /// Run the fuzz targets (fuzz/: config, import, ticket, store, pcap) with cargo-fuzz, each
    /// for SECS seconds, from the corpus in the repository. Findings land in fuzz/artifacts/.
    Fuzz {
        /// One target; all of them if left out.
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Build optimized and install the binary, man pages, shell completions, the systemd unit
    /// and (if there is none) an example config, under ROOT (default /). On /, also create the
    /// system user `edge` the unit runs as.
    /// Build optimized and make a Debian package (dpkg-deb): the binary, man pages,
    /// completions, the systemd unit, the example config as a conffile, the alert rules and the
    /// dashboard; maintainer scripts create the `edge` user. Prints the .deb's path last.
    Package {
        /// Package this binary instead of building one.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// Where the .deb goes.
        #[arg(long, default_value = "target/debian")]
        out: std::path::PathBuf,
        /// The package's version (default: the crate's).
        #[arg(long)]
        version: Option<String>,
        /// Leave the package's contents uncompressed (the tests' debug binaries are large).
        #[arg(long)]
        no_compress: bool,
    },
    Install {
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
        /// Where the binary, man pages and completions go, below ROOT.
        #[arg(long, default_value = "usr/local")]
        prefix: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Test => {
            setup()?;
            run(cargo().args(["build", "--package", "edge-user", "--bins"]))?;
            let edge = root.join("target/debug/edge");
            let tested = test(cargo().args(["test", "--no-fail-fast"]).env("EDGE_BIN", &edge));
            // Every fuzz target for a bounded time: what the corpus and a few seconds of
            // mutation find, every run.
            let fuzzed = fuzz(&FUZZ_TARGETS, FUZZ_SECS_IN_TEST);
            tested.and(fuzzed)
        }
        Task::Fuzz { target, secs } => {
            setup()?;
            match target {
                Some(t) if FUZZ_TARGETS.contains(&t.as_str()) => fuzz(&[t.as_str()], secs),
                Some(t) => bail!("no fuzz target `{t}`; they are {FUZZ_TARGETS:?}"),
                None => fuzz(&FUZZ_TARGETS, secs),
            }
        }
        Task::Demo => {
            setup()?;
            build_release()?;
            let edge = root.join("target/release/edge");
            run(Command::new(root.join("target/release/edge-lab-demo")).env("EDGE_BIN", &edge))
        }
        Task::Bench { json, lab } => {
            setup()?;
            build_release()?;
            // The data plane (program in the kernel), then the control plane (store, daemon, API);
            // or the lab.
            let benches: &[&str] = if lab {
                &["edge-bench-lab", "edge-bench-syn-flood"]
            } else {
                &["edge-bench", "edge-bench-daemon", "edge-bench-tokens", "edge-bench-fleet"]
            };
            for bench in benches {
                let mut cmd = Command::new(root.join("target/release").join(bench));
                cmd.env("EDGE_BIN", root.join("target/release/edge"));
                if json {
                    cmd.arg("--json");
                }
                run(&mut cmd)?;
            }
            Ok(())
        }
        Task::Package { binary, out, version, no_compress } => {
            let edge = match binary {
                Some(path) => path,
                None => {
                    build_release()?;
                    root.join("target/release/edge")
                }
            };
            std::fs::create_dir_all(&out)?;
            let version = version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
            let deb = package::package(&edge, &out, &version, !no_compress)?;
            println!("{}", std::fs::canonicalize(deb)?.display());
            Ok(())
        }
        Task::Install { root: dest, prefix } => {
            build_release()?;
            install(&root.join("target/release/edge"), &dest, &prefix)
        }
    }
}

/// Copies what `edge` needs to run as a service into `dest`; the man pages and completions
/// are generated by the binary itself from its CLI definition.
fn install(edge: &std::path::Path, dest: &std::path::Path, prefix: &std::path::Path) -> Result<()> {
    let usr = dest.join(prefix);
    let dir = |rel: &str| -> Result<std::path::PathBuf> {
        let d = usr.join(rel);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    };
    let bin = dir("bin")?.join("edge");
    std::fs::copy(edge, &bin).with_context(|| format!("installing {}", bin.display()))?;
    run(Command::new(&bin).arg("man").arg("--out").arg(dir("share/man/man1")?))?;
    for (shell, rel, name) in [
        ("bash", "share/bash-completion/completions", "edge"),
        ("zsh", "share/zsh/site-functions", "_edge"),
        ("fish", "share/fish/vendor_completions.d", "edge.fish"),
    ] {
        let out = Command::new(&bin).args(["completions", shell]).output()?;
        if !out.status.success() {
            bail!("edge completions {shell} failed");
        }
        std::fs::write(dir(rel)?.join(name), out.stdout)?;
    }
    // The unit names the binary's installed path.
    let unit = std::fs::read_to_string("packaging/edge.service")?.replace(
        "/usr/local/bin/edge",
        &std::path::Path::new("/").join(prefix).join("bin/edge").display().to_string(),
    );
    let units = dest.join("etc/systemd/system");
    std::fs::create_dir_all(&units)?;
    std::fs::write(units.join("edge.service"), unit)?;
    let etc = dest.join("etc/edge");
    std::fs::create_dir_all(&etc)?;
    let config = etc.join("edge.toml");
    if config.exists() {
        println!("install: kept the existing {}", config.display());
    } else {
        std::fs::copy("packaging/edge.toml", &config)?;
    }
    if dest == std::path::Path::new("/")
        && !quiet_ok(Command::new("getent").args(["passwd", "edge"]))
    {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/var/lib/edge",
            "--shell",
            "/usr/sbin/nologin",
            "edge",
        ]))?;
    }
    println!(
        "install: {} and its man pages, completions, unit and config are under {}\n\
         next: edit /etc/edge/edge.toml (interfaces), then `systemctl daemon-reload && \
         systemctl enable --now edge`",
        bin.display(),
        dest.display()
    );
    Ok(())
}

/// The `edge` binary and the lab binaries (demo, benchmarks, probe), optimized.
fn build_release() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "edge-user",
        "--package",
        "edge-tests",
        "--bins",
    ]))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and ends with one total line over all test binaries.
fn test(cmd: &mut Command) -> Result<()> {
    use std::io::BufRead as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result.split(';').find_map(|part| {
                    part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok()
                })
            };
            passed += count("passed").unwrap_or(0);
            failed += count("failed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    if std::env::var("EDGE_SKIP_PRIVILEGED").is_ok_and(|v| v == "1") {
        println!("xtask test: privileged tests SKIPPED (EDGE_SKIP_PRIVILEGED=1)");
    }
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// Runs each fuzz target for `secs` seconds from its corpus (new inputs go to a scratch
/// directory, so the repository's corpus changes only by hand), printing executions and
/// findings. Fails if any target finds a crash, a panic, a leak or a timeout.
fn fuzz(targets: &[&str], secs: u64) -> Result<()> {
    let have = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !have.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        run(cargo().args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"]))?;
    }
    let nightly = format!("+{}", ebpf_toolchain()?);
    // One build of every target first, so a build error is reported as one.
    run(Command::new("cargo")
        .args([nightly.as_str(), "fuzz", "build", "--fuzz-dir", "fuzz"])
        .env("AYA_BUILD_SKIP", "1"))
    .context("building the fuzz targets")?;
    let mut failed = Vec::new();
    for target in targets {
        let scratch =
            std::env::temp_dir().join(format!("edge-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let corpus = format!("fuzz/corpus/{target}");
        let out = Command::new("cargo")
            .args([nightly.as_str(), "fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&scratch)
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={secs}"), "-timeout=10", "-print_final_stats=1"])
            // The program objects are not needed to parse: the library builds without them.
            .env("AYA_BUILD_SKIP", "1")
            .stderr(std::process::Stdio::piped())
            .output()
            .with_context(|| format!("running cargo fuzz for {target}"))?;
        let _ = std::fs::remove_dir_all(&scratch);
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?".to_string(), |n| n.trim().to_string());
        if out.status.success() {
            println!("fuzz {target}: {runs} executions in {secs} s, no findings");
        } else {
            eprintln!("{log}");
            println!("fuzz {target}: FINDING after {runs} executions (see above and fuzz/artifacts/{target}/)");
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets with findings: {failed:?}");
    }
    Ok(())
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// The eBPF crate's pinned nightly: `channel` in edge-ebpf/rust-toolchain.toml, the one place
/// it is named (edge-user's build.rs reads it too).
fn ebpf_toolchain() -> Result<String> {
    let file = "edge-ebpf/rust-toolchain.toml";
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("channel"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_string())
        .with_context(|| format!("{file}: no `channel = \"...\"` line"))
}

fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !quiet_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", p])))
        .collect();
    if !missing.is_empty() {
        eprintln!("setup: installing {missing:?}");
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // The pinned nightly with rust-src: the eBPF crate is built with -Z build-std=core.
    let nightly = ebpf_toolchain()?;
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", &nightly])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: installing {nightly} with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            &nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    // The other side's real tools for interop tests (grpcio and its health and reflection
    // clients; PyJWT and cryptography for waiting rooms' tokens), pinned in the repo.
    let imports =
        "import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2, \
                   jwt, cryptography";
    if !quiet_ok(Command::new("python3").args(["-c", imports])) {
        eprintln!("setup: installing the Python interop clients (tests/python/requirements.txt)");
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--requirement",
            "tests/python/requirements.txt",
        ]))?;
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    let have = linker
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about 1.5 minutes)");
        run(cargo().args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}
