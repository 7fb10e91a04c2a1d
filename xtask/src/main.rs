//! Project tasks cargo cannot express: set up a fresh machine, run all tests (privileged ones
//! included), run the namespace demo, and benchmark the program in the kernel.
//!
//! Kept free of the workspace's BPF crates so it builds before bpf-linker is installed.
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

/// The bpf-linker release that links with nightly's LLVM on these machines (see README).
const BPF_LINKER_VERSION: &str = "0.10.3";
/// Debian packages the tests and demo use: ip (netns, veth), nsenter, a real Redis for the
/// admission feed's tests, and promtool (in `prometheus`) to check the metrics exposition.
const APT_PACKAGES: [&str; 4] = ["iproute2", "util-linux", "redis-server", "prometheus"];

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
            test(cargo().args(["test", "--no-fail-fast"]).env("EDGE_BIN", &edge))
        }
        Task::Demo => {
            setup()?;
            build_release()?;
            let edge = root.join("target/release/edge");
            run(Command::new(root.join("target/release/edge-lab-demo")).env("EDGE_BIN", &edge))
        }
        Task::Bench { json } => {
            setup()?;
            build_release()?;
            // The data plane (program in the kernel), then the control plane (store, daemon, API).
            for bench in ["edge-bench", "edge-bench-daemon"] {
                let mut cmd = Command::new(root.join("target/release").join(bench));
                cmd.env("EDGE_BIN", root.join("target/release/edge"));
                if json {
                    cmd.arg("--json");
                }
                run(&mut cmd)?;
            }
            Ok(())
        }
    }
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

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
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
    // Nightly with rust-src: the eBPF crate is built with -Z build-std=core.
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: installing nightly with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
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
