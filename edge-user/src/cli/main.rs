//! `edge`: the daemon, the thin client that talks to it, and the standalone tools (attach
//! without a daemon, replay a capture, check a policy). Exit codes: 0 ok, 1 error, 2 usage.
mod remote;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use edge::{
    replay,
    ticket::{self, Keyring},
    Day, Filter, Policy, VisitorHistory,
};

#[derive(Parser)]
#[command(
    name = "edge",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("EDGE_GIT_REV"), ")"),
    about = "XDP edge admission filter"
)]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "EDGE_SOCKET", default_value = edge::policy::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control daemon: attach to the config's interfaces (or adopt the pinned filter),
    /// keep the maps right, serve the API.
    Daemon {
        #[arg(long, default_value = "/etc/edge/edge.toml")]
        config: PathBuf,
        /// Log lines as text or JSON (stderr). Levels: EDGE_LOG=debug|info|warn|error.
        #[arg(long, value_enum, default_value_t)]
        log_format: edge::daemon::LogFormat,
    },
    /// Daemon status (from the pins if the daemon is down).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set the mode: off, monitor, enforce, or auto (enforce while unknown sources flood;
    /// thresholds in the config's [auto] table). Persisted by the daemon.
    Mode {
        #[arg(value_parser = ["off", "monitor", "enforce", "auto"])]
        mode: String,
    },
    /// The rolling visitor whitelist.
    #[command(subcommand)]
    Visitors(remote::VisitorsCommand),
    /// The static allow list (CIDR prefixes that always pass).
    #[command(subcommand)]
    Allow(remote::RulesCommand),
    /// The static deny list (CIDR prefixes that never pass).
    #[command(subcommand)]
    Deny(remote::RulesCommand),
    /// The daemon's configuration.
    #[command(subcommand)]
    Config(remote::ConfigCommand),
    /// Admission ticket keys (SipHash-2-4, 128-bit), kept in a key ring file (mode 0600).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Mint and check admission tickets (docs/tickets.md).
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// Load the filter with a policy and attach it to an interface; it stays attached (pinned
    /// under /sys/fs/bpf/edge/IFACE) after this command exits.
    Attach {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        xdp_mode: XdpModeArg,
        /// Attach even if the policy would cut this SSH session (SSH_CONNECTION).
        #[arg(long)]
        force: bool,
    },
    /// Detach the filter from an interface and remove its pins.
    Detach {
        #[arg(long)]
        iface: String,
    },
    /// Packets and bytes per reason: from the daemon, or from the pins if it is down.
    Stats {
        /// One interface; all of them if left out.
        #[arg(long)]
        iface: Option<String>,
        /// Print again every SECS seconds, with the rate since the last print.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// The sources and prefixes (/24, /48) dropped most over the last seconds, with rates
    /// estimated from the kernel's sampled drops.
    Top {
        /// Entries per list (1..=1000).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print again every SECS seconds.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
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
    /// Print the shell completion script for SHELL.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write edge.1 and one page per subcommand into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new key ring with one random key (id 1); never overwrites a file.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new current key; the current one stays valid as the previous key, the one
    /// before it is retired. The file is replaced atomically.
    Rotate {
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
enum TicketCommand {
    /// Mint a ticket for IP (IPv6: its /64) with the current key; prints its text form.
    Issue {
        #[arg(long)]
        ip: std::net::IpAddr,
        /// Valid for this long: 90s, 10m, 12h, 1d.
        #[arg(long, default_value = "10m")]
        ttl: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a ticket (text form) against the key ring, and against IP if given.
    Verify {
        ticket: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
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
    match run(cli.command, &cli.socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
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
    filter.maps.set_ticket_keys(policy.admission.keyring()?.as_ref())?;
    Ok(filter)
}

fn run(command: Command, socket: &std::path::Path) -> anyhow::Result<()> {
    use remote::Request;
    match command {
        Command::Daemon { config, log_format } => {
            edge::daemon::init_logging(log_format);
            runtime()?.block_on(edge::daemon::run(&config))?
        }
        Command::Status { json } => remote::run(socket, Request::Status { json })?,
        Command::Mode { mode } => remote::run(socket, Request::Mode(mode))?,
        Command::Visitors(c) => remote::run(socket, Request::Visitors(c))?,
        Command::Allow(c) => remote::run(socket, Request::Rules("allow", c))?,
        Command::Deny(c) => remote::run(socket, Request::Rules("deny", c))?,
        Command::Config(c) => remote::run(socket, Request::Config(c))?,
        Command::Top { limit, watch, json } => {
            remote::run(socket, Request::Top { limit, watch, json })?
        }
        Command::Stats { iface, watch, json } => {
            remote::run(socket, Request::Stats { iface, watch, json })?
        }
        Command::Key(KeyCommand::Generate { out }) => {
            Keyring::generate()?.create(&out)?;
            println!("wrote a new key ring to {} (key id 1, mode 600)", out.display());
        }
        Command::Key(KeyCommand::Rotate { key }) => {
            let ring = Keyring::load(&key)?;
            let rotated = ring.rotate()?;
            rotated.replace(&key)?;
            println!(
                "{}: current key id {}, previous {} (key id {} retired)",
                key.display(),
                rotated.current().id,
                ring.current().id,
                ring.keys().get(1).map_or("none".into(), |k| k.id.to_string())
            );
        }
        Command::Ticket(TicketCommand::Issue { ip, ttl, key }) => {
            let ring = Keyring::load(&key)?;
            let not_after = unix_now() + remote::parse_duration(&ttl)?;
            let ticket = ticket::issue(ring.current(), ip, not_after, ticket::random_id()?);
            println!("{}", ticket::encode(&ticket));
        }
        Command::Ticket(TicketCommand::Verify { ticket: text, key, ip }) => {
            let ring = Keyring::load(&key)?;
            let ticket = ticket::decode(&text)?;
            let ok = ticket::verify(&ticket, &ring, unix_now(), ip)
                .map_err(|e| anyhow::anyhow!("ticket refused ({}): {e}", e.reason()))?;
            println!(
                "valid: {} until {} (unix {}), key id {}, ticket id {:016x}",
                ok.ip,
                remote::utc(ok.not_after),
                ok.not_after,
                ok.key_id,
                ok.ticket_id
            );
        }
        Command::Attach { iface, policy: path, xdp_mode, force } => {
            let (policy, history, today) = load_policy(&path)?;
            if policy.mode == edge::Mode::Auto {
                anyhow::bail!(
                    "{}: mode = \"auto\" needs `edge daemon` to watch the rate; edge attach \
                     runs off, monitor or enforce",
                    path.display()
                );
            }
            if let Some(session) = edge::guard::SshSession::from_env() {
                // Judged by an instance of its own, so the attached one starts with clean
                // counters and budgets.
                let mut judge = loaded_filter(&policy, &history, today)?;
                if let Some(cut) = edge::guard::would_cut(&mut judge, &session, &iface)? {
                    if !force {
                        anyhow::bail!("not attached: {cut}");
                    }
                    eprintln!("edge: warning (--force): {cut}");
                }
            }
            let filter = loaded_filter(&policy, &history, today)?;
            let (pins, _) = filter.attach(&iface, xdp_mode.into())?;
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "edge", &mut std::io::stdout())
        }
        Command::Man { out: None } => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?
        }
        Command::Man { out: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
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
