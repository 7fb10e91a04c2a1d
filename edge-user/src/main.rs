//! `edge`: attach the admission filter to interfaces, read its counters, and check a policy
//! against captured traffic. Exit codes: 0 ok, 1 error, 2 usage.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use edge::{replay, stats::render_table, Day, Filter, Policy, VisitorHistory};

#[derive(Parser)]
#[command(name = "edge", version, about = "XDP edge admission filter")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the filter with a policy and attach it to an interface; it stays attached (pinned
    /// under /sys/fs/bpf/edge/IFACE) after this command exits.
    Attach {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        xdp_mode: XdpModeArg,
    },
    /// Detach the filter from an interface and remove its pins.
    Detach {
        #[arg(long)]
        iface: String,
    },
    /// Packets and bytes per reason, from the pinned counters.
    Stats {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        json: bool,
    },
    /// Run every frame of a pcap/pcapng file through the real program with a policy's maps.
    Replay {
        pcap: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Validate a policy file (and its visitors file) without touching the kernel.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum XdpModeArg {
    /// Native if the driver supports it, generic (skb) otherwise.
    Auto,
    Native,
    Skb,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => XdpMode::Default,
            XdpModeArg::Native => XdpMode::Driver,
            XdpModeArg::Skb => XdpMode::Skb,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A policy and its visitors, both validated, as of today (UTC).
fn load_policy(path: &std::path::Path) -> anyhow::Result<(Policy, VisitorHistory, Day)> {
    let today = Day::today_utc();
    let policy = Policy::load(path)?;
    let history = match &policy.visitors {
        Some(file) => edge::import::load(file, edge::import::Format::Csv, today)?,
        None => VisitorHistory::default(),
    };
    Ok((policy, history, today))
}

fn loaded_filter(policy: &Policy, history: &VisitorHistory, today: Day) -> anyhow::Result<Filter> {
    let mut filter = Filter::load()?;
    filter.maps.apply(policy, history, today)?;
    Ok(filter)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Attach { iface, policy: path, xdp_mode } => {
            let (policy, history, today) = load_policy(&path)?;
            let filter = loaded_filter(&policy, &history, today)?;
            let pins = filter.attach(&iface, xdp_mode.into())?;
            println!(
                "edge attached to {iface} in {} mode; visitors known: {}; pins in {}",
                serde_json::to_value(policy.mode)?.as_str().unwrap_or("?"),
                history.len(),
                pins.display()
            );
        }
        Command::Detach { iface } => {
            edge::detach(&iface)?;
            println!("edge detached from {iface}");
        }
        Command::Stats { iface, json } => {
            let rows = edge::pinned_stats(&iface)?.rows(true);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render_table(&rows));
            }
        }
        Command::Replay { pcap, policy: path, json } => {
            let (policy, history, today) = load_policy(&path)?;
            let frames = replay::read_frames(&pcap)?;
            let mut filter = loaded_filter(&policy, &history, today)?;
            let summary = replay::replay(&mut filter, &frames, |v| {
                if json {
                    println!("{}", serde_json::to_string(v).expect("serializable"));
                } else {
                    let note = if v.would_drop { " (would drop)" } else { "" };
                    println!("#{:<6} {:<5} {}{note}", v.index, v.verdict, v.reason);
                }
            })?;
            if json {
                println!("{}", serde_json::json!({ "summary": summary }));
            } else {
                println!(
                    "{} frames: {} pass, {} drop, {} would drop in monitor mode",
                    summary.frames, summary.pass, summary.drop, summary.would_drop
                );
                for (reason, n) in &summary.reasons {
                    println!("  {reason:<20} {n}");
                }
            }
        }
        Command::Check { policy: path } => {
            let (policy, history, _) =
                load_policy(&path).with_context(|| format!("{} is not valid", path.display()))?;
            println!(
                "{}: ok ({:?} mode, {} protected, {} allow, {} deny, {} visitors)",
                path.display(),
                policy.mode,
                policy.protect.len(),
                policy.allow.len(),
                policy.deny.len(),
                history.len()
            );
        }
    }
    Ok(())
}
