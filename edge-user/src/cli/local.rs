//! The commands that need no daemon: run one, attach and detach without one, replay a
//! capture, check a config, keys and tickets, salvage a store, completions and man pages.
use anyhow::Context as _;
use clap::CommandFactory as _;
use edge::{
    replay,
    text::{parse_duration, utc},
    ticket::{self, Keyring},
    Day, Filter, Policy, VisitorHistory,
};

use crate::args::{Cli, Command, KeyCommand, StoreCommand, TicketCommand, TokenCommand};

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Daemon { config, log_format } => {
            edge::daemon::init_logging(log_format);
            runtime()?.block_on(edge::daemon::run(&config))?
        }
        Command::Key(KeyCommand::Generate { out }) => {
            Keyring::generate()?.create(&out)?;
            outln!("wrote a new key ring to {} (key id 1, mode 600)", out.display())?;
        }
        Command::Key(KeyCommand::Rotate { key }) => {
            let ring = Keyring::load(&key)?;
            let rotated = ring.rotate()?;
            rotated.replace(&key)?;
            outln!(
                "{}: current key id {}, previous {} (key id {} retired)",
                key.display(),
                rotated.current().id,
                ring.current().id,
                ring.keys().get(1).map_or("none".into(), |k| k.id.to_string())
            )?;
        }
        Command::Ticket(TicketCommand::Issue { ip, ttl, key }) => {
            let ring = Keyring::load(&key)?;
            let ttl = parse_duration(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let ticket = ticket::issue(ring.current(), ip, unix_now() + ttl, ticket::random_id()?);
            outln!("{}", ticket::encode(&ticket))?;
        }
        Command::Ticket(TicketCommand::Verify { ticket: text, key, ip }) => {
            let ring = Keyring::load(&key)?;
            let ticket = ticket::decode(&text)?;
            let ok = ticket::verify(&ticket, &ring, unix_now(), ip)
                .map_err(|e| anyhow::anyhow!("ticket refused ({}): {e}", e.reason()))?;
            outln!(
                "valid: {} until {} (unix {}), key id {}, ticket id {:016x}",
                ok.ip,
                utc(ok.not_after),
                ok.not_after,
                ok.key_id,
                ok.ticket_id
            )?;
        }
        Command::Token(TokenCommand::Verify { token, config, kind, ip, json }) => {
            crate::token::verify(&token, &config, kind.as_deref(), ip, json)?
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
            outln!(
                "edge attached to {iface} in {} mode; visitors known: {}; pins in {}",
                policy.mode,
                history.len(),
                pins.display()
            )?;
        }
        Command::Detach { iface } => {
            edge::detach(&iface)?;
            outln!("edge detached from {iface}")?;
        }
        Command::Replay { pcap, policy: path, json } => replay_capture(&pcap, &path, json)?,
        Command::Check { policy: path } => {
            let (policy, history, _) =
                load_policy(&path).with_context(|| format!("{} is not valid", path.display()))?;
            // The files the daemon reads at start: key files (their modes, their contents)
            // and the endpoint's certificate.
            edge::token::Verifiers::from_settings(&policy.admission)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let files = policy.admission.http.iter().flat_map(|h| h.tls.iter());
            let ca = policy.admission.jwt.iter().filter_map(|j| match &j.keys {
                edge::policy::JwksSource::Url { ca_file, .. } => ca_file.as_ref(),
                edge::policy::JwksSource::File(_) => None,
            });
            for file in files.flat_map(|(cert, key)| [cert, key]).chain(ca) {
                std::fs::metadata(file)
                    .with_context(|| format!("{}: {}", path.display(), file.display()))?;
            }
            outln!(
                "{}: ok ({:?} mode, {} protected, {} allow, {} deny, {} visitors)",
                path.display(),
                policy.mode,
                policy.protect.len(),
                policy.allow.len(),
                policy.deny.len(),
                history.len()
            )?;
        }
        Command::Store(StoreCommand::Salvage { state_dir, config }) => salvage(state_dir, &config)?,
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
        _ => unreachable!("main() hands the daemon's commands to remote::run"),
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// A policy and its visitors, both validated, as of today (UTC).
/// The policy for the commands that use the program without a daemon (attach, replay,
/// check). SYN cookies are the daemon's alone: it sets up the host's sysctls and puts them
/// back, and a replay must not make cookies for this host's listeners.
fn load_policy(path: &std::path::Path) -> anyhow::Result<(Policy, VisitorHistory, Day)> {
    let today = Day::today_utc();
    let mut policy = Policy::load(path)?;
    policy.syn_cookies.mode = edge::policy::SynCookieMode::Off;
    let history = match &policy.visitors {
        Some(file) => edge::import::load(file, edge::import::Format::Csv, today)?,
        None => VisitorHistory::default(),
    };
    Ok((policy, history, today))
}

fn loaded_filter(policy: &Policy, history: &VisitorHistory, today: Day) -> anyhow::Result<Filter> {
    let mut filter = Filter::load()?;
    filter.maps.apply(policy, history, today)?;
    let keys = policy.admission.keys.as_deref().map(Keyring::load).transpose()?;
    filter.maps.set_ticket_keys(keys.as_ref())?;
    Ok(filter)
}

/// `edge replay`: every frame of the capture judged by the real program. A capture that ends
/// inside a frame is judged up to there, then reported (and the command fails).
fn replay_capture(
    pcap: &std::path::Path,
    path: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let (policy, history, today) = load_policy(path)?;
    let capture = replay::read_frames(pcap)?;
    let mut filter = loaded_filter(&policy, &history, today)?;
    let mut written = Ok(());
    let summary = replay::replay(&mut filter, &capture.frames, |v| {
        if written.is_err() {
            return;
        }
        written = if json {
            outln!("{}", serde_json::to_string(v).expect("serializable"))
        } else {
            let note = if v.would_drop { " (would drop)" } else { "" };
            let cut = match v.captured_of {
                Some(length) => {
                    format!(" (cut by the snap length: judged on {} of {length} bytes)", v.captured)
                }
                None => String::new(),
            };
            outln!("#{:<6} {:<5} {}{note}{cut}", v.index, v.verdict, v.reason)
        };
    })?;
    written?;
    if json {
        outln!(
            "{}",
            serde_json::json!({ "summary": summary, "truncated_end": capture.truncated_end })
        )?;
    } else {
        outln!(
            "{} frames: {} pass, {} drop, {} would drop in monitor mode, {} cut by the snap length",
            summary.frames,
            summary.pass,
            summary.drop,
            summary.would_drop,
            summary.cut
        )?;
        for (reason, n) in &summary.reasons {
            outln!("  {reason:<20} {n}")?;
        }
    }
    if let Some(why) = capture.truncated_end {
        anyhow::bail!(
            "{}: {why}; the {} frames before it were judged",
            pcap.display(),
            summary.frames
        );
    }
    Ok(())
}

fn salvage(state_dir: Option<std::path::PathBuf>, config: &std::path::Path) -> anyhow::Result<()> {
    let dir = match state_dir {
        Some(dir) => dir,
        None => Policy::load(config)?.daemon.map(|d| d.state_dir).with_context(|| {
            format!("{}: no [daemon] table; pass --state-dir", config.display())
        })?,
    };
    let report = edge::store::salvage(&dir)?;
    for (file, at, len) in &report.skipped {
        outln!("skipped {len} bytes at byte {at} of {}", file.display())?;
    }
    if let (Some(first), Some(last)) = (report.missing.first(), report.missing.last()) {
        outln!("records lost: {} (sequence numbers {first} to {last})", report.missing.len())?;
    }
    match &report.moved_to {
        Some(aside) => outln!(
            "{}: kept {} records; the old files are in {}",
            dir.display(),
            report.kept,
            aside.display()
        )?,
        None => outln!("{}: nothing is damaged; nothing was changed", dir.display())?,
    }
    Ok(())
}
