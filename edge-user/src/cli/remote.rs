//! The commands that talk to the daemon. Thin: parse arguments, make one API call, print.
//! `stats` and `status` fall back to reading the pins when the daemon is down.
use std::{
    io::{IsTerminal as _, Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use edge::{
    api::{
        self, control_client::ControlClient, rules_client::RulesClient,
        visitors_client::VisitorsClient,
    },
    stats::{render_table, Row},
};
use tonic::{transport::Channel, Code};

#[derive(Subcommand)]
pub enum VisitorsCommand {
    /// Record visits of IPs (IPv6: their /64) on a day (default today, UTC).
    Add {
        #[arg(required = true)]
        ips: Vec<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
    },
    /// Forget visitors.
    Remove {
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// List visitors in address order, a page at a time.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Start at this visitor (the `next:` line of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// How many visitors are in the window.
    Count {
        #[arg(long)]
        json: bool,
    },
    /// Import a file, all or nothing: a plain list, IP,YYYY-MM-DD CSV, or a combined access log.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "csv", "combined"])]
        format: String,
    },
    /// Write every visitor as IP,YYYY-MM-DD (to FILE, or standard output).
    Export { file: Option<PathBuf> },
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Add CIDR prefixes (or bare addresses).
    Add {
        #[arg(required = true)]
        cidrs: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
        /// Remove the entries after this long: 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    Remove {
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The effective configuration (TOML; the mode set through the API included).
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Make the daemon re-read its config file (as SIGHUP does). A file with an error is
    /// refused with file:line and field, and the running config stays.
    Reload {
        #[arg(long)]
        json: bool,
    },
}

pub enum Request {
    Status { json: bool },
    Mode(String),
    Visitors(VisitorsCommand),
    Rules(&'static str, RulesCommand),
    Config(ConfigCommand),
    Stats { iface: Option<String>, watch: Option<u64>, json: bool },
    Top { limit: u32, watch: Option<u64>, json: bool },
}

pub fn run(socket: &Path, request: Request) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let channel = edge::client::connect(socket).await;
        match (request, channel) {
            (Request::Stats { iface, watch, json }, Err(_)) => {
                eprintln!(
                    "edge: the daemon is not reachable at {}; reading the pins",
                    socket.display()
                );
                stats_loop(watch, json, || pinned_rows(iface.as_deref())).await
            }
            (Request::Status { json }, Err(_)) => pinned_status(socket, json),
            (_, Err(e)) => bail!(
                "cannot reach the edge daemon at {} ({e}); is `edge daemon` running? \
                 (--socket or EDGE_SOCKET pick another)",
                socket.display()
            ),
            (request, Ok(channel)) => call(channel, request).await.map_err(explain),
        }
    })
}

/// `CODE: message`, with the gRPC code spelled as in the .proto's documentation.
fn explain(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<tonic::Status>() {
        Some(status) => anyhow::anyhow!("{}: {}", code_name(status.code()), status.message()),
        None => e,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Internal => "INTERNAL",
        _ => "ERROR",
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn call(channel: Channel, request: Request) -> anyhow::Result<()> {
    let mut control = ControlClient::new(channel.clone());
    let mut visitors = VisitorsClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut rules = RulesClient::new(channel);
    match request {
        Request::Status { json } => {
            let s = control.get_status(api::GetStatusRequest {}).await?.into_inner();
            if json {
                return print_json(&s);
            }
            let mode = match &s.auto {
                Some(a) => format!(
                    "auto, {} since {} ({} pps unknown; enter >= {} for {} s, leave < {} for \
                     {} s; switches: {} to enforce, {} to monitor)",
                    a.phase,
                    utc(a.since),
                    s.unknown_pps.round(),
                    a.enter_pps,
                    a.sustain_s,
                    a.exit_pps,
                    a.cool_down_s,
                    a.switches_to_enforce,
                    a.switches_to_monitor
                ),
                None => s.mode.clone(),
            };
            println!(
                "edge {}: {}, mode {mode}",
                s.version,
                if s.ready { "ready" } else { "NOT READY" },
            );
            for i in &s.interfaces {
                let adopted = if i.adopted { " (adopted pins)" } else { "" };
                println!("  {:<16} {}{adopted}", i.name, i.state);
            }
            println!(
                "  today {} (UTC), window {} days, rolled to {}",
                s.today, s.window_days, s.rolled_to
            );
            println!("  visitors: {} IPv4, {} IPv6 /64", s.visitors_v4, s.visitors_v6);
            println!("  rules: {} allow, {} deny", s.allow_rules, s.deny_rules);
            println!("  store: {} ({} bytes of log since the snapshot)", s.state_dir, s.wal_bytes);
        }
        Request::Mode(mode) => {
            let r = control.set_mode(api::SetModeRequest { mode }).await?.into_inner();
            println!("mode: {} (was {})", r.mode, r.previous);
        }
        Request::Config(ConfigCommand::Show { json }) => {
            let c = control.get_config(api::GetConfigRequest {}).await?.into_inner();
            if json {
                return print_json(&c);
            }
            println!("# {} (mode from {})", c.path, c.mode_source);
            print!("{}", c.toml);
        }
        Request::Config(ConfigCommand::Reload { json }) => {
            let r = control.reload_config(api::ReloadConfigRequest {}).await?.into_inner();
            if json {
                return print_json(&r);
            }
            if r.changes.is_empty() {
                println!("{}: reloaded; nothing changed", r.path);
            }
            for change in &r.changes {
                println!("{}: {change}", r.path);
            }
        }
        Request::Top { limit, watch, json } => loop {
            let t = control.get_top(api::GetTopRequest { limit }).await?.into_inner();
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                print_top(&t);
            }
            let Some(secs) = watch else { break };
            std::io::stdout().flush()?;
            tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await;
        },
        Request::Stats { iface, watch, json } => {
            let interface = iface.unwrap_or_default();
            stats_loop(watch, json, || {
                let mut control = control.clone();
                let interface = interface.clone();
                async move {
                    let r = control.get_stats(api::GetStatsRequest { interface }).await?;
                    Ok(r.into_inner().rows.into_iter().map(row_of).collect())
                }
            })
            .await?;
        }
        Request::Visitors(command) => visitors_command(&mut visitors, command).await?,
        Request::Rules(list, command) => rules_command(&mut rules, list, command).await?,
    }
    Ok(())
}

fn row_of(r: api::StatsRow) -> Row {
    Row { reason: r.reason, action: r.action, packets: r.packets, bytes: r.bytes }
}

/// Prints the rows once, or every `watch` seconds with each row's packets per second since the
/// previous print (`--json`: one array per print, with `packets_per_second` once known).
fn print_top(t: &api::GetTopResponse) {
    if t.sample_every == 0 {
        println!("drop sampling is off (events.drop_sample = 0)");
        return;
    }
    println!(
        "dropped over the last {:.0} s (1 in {} drops sampled, {} samples)",
        t.window_s, t.sample_every, t.samples
    );
    for (title, entries) in [("SOURCE", &t.sources), ("PREFIX", &t.prefixes)] {
        println!("{title:<42} {:>12} {:>9}  REASON", "DROPS/S", "SAMPLES");
        if entries.is_empty() {
            println!("  (none)");
        }
        for e in entries {
            println!("{:<42} {:>12.0} {:>9}  {}", e.key, e.pps, e.samples, e.reason);
        }
    }
}

async fn stats_loop<F, Fut>(watch: Option<u64>, json: bool, mut fetch: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Row>>>,
{
    let mut previous: Option<(Vec<Row>, std::time::Instant)> = None;
    loop {
        let rows = fetch().await?;
        let now = std::time::Instant::now();
        let rates =
            previous.as_ref().map(|(prev, at)| rates(&rows, prev, (now - *at).as_secs_f64()));
        if json {
            let out: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut v = serde_json::to_value(r).expect("a row serializes");
                    if let Some(rates) = &rates {
                        v["packets_per_second"] =
                            serde_json::json!((rates[i] * 10.0).round() / 10.0);
                    }
                    v
                })
                .collect();
            println!("{}", serde_json::to_string(&out)?);
        } else {
            let table = render_table(&rows);
            match &rates {
                None => print!("{table}"),
                Some(rates) => {
                    let mut lines = table.lines();
                    println!("{} {:>12}", lines.next().unwrap_or_default(), "PACKETS/S");
                    for (line, rate) in lines.zip(rates) {
                        println!("{line} {rate:>12.1}");
                    }
                }
            }
        }
        let Some(secs) = watch else { return Ok(()) };
        previous = Some((rows, now));
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
        if !json {
            println!();
        }
    }
}

/// Packets per second of each row of `now` since `before` (rows matched by reason and action;
/// a row new since then counts from zero).
fn rates(now: &[Row], before: &[Row], seconds: f64) -> Vec<f64> {
    now.iter()
        .map(|r| {
            let then = before
                .iter()
                .find(|b| b.reason == r.reason && b.action == r.action)
                .map_or(0, |b| b.packets);
            r.packets.saturating_sub(then) as f64 / seconds.max(1e-9)
        })
        .collect()
}

async fn pinned_rows(iface: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let interfaces = match iface {
        Some(i) => vec![i.to_string()],
        None => edge::filter::pinned_interfaces()?,
    };
    if interfaces.is_empty() {
        bail!("edge is not attached to any interface (no pins in {})", edge::filter::PIN_ROOT);
    }
    let mut total: Option<edge::Stats> = None;
    for iface in interfaces {
        let stats = edge::pinned_stats(&iface)?;
        total = Some(match total {
            Some(sum) => sum.plus(&stats),
            None => stats,
        });
    }
    Ok(total.expect("at least one interface").rows(false))
}

fn pinned_status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let interfaces = edge::filter::pinned_interfaces()?;
    // (name, mode, whether its link still has a device: the kernel detaches it with one)
    let pinned: Vec<(String, String, bool)> = interfaces
        .iter()
        .map(|i| {
            let mode = edge::filter::pinned_mode(i)?.to_string();
            Ok((i.clone(), mode, edge::filter::pinned_link_live(i)?))
        })
        .collect::<anyhow::Result<_>>()?;
    if json {
        let attached: Vec<_> = pinned
            .iter()
            .map(|(i, m, live)| serde_json::json!({ "name": i, "mode": m, "live": live }))
            .collect();
        return print_json(&serde_json::json!({ "daemon": "unreachable", "attached": attached }));
    }
    println!("edge daemon: not reachable at {}", socket.display());
    if pinned.is_empty() {
        println!("  not attached to any interface");
    }
    for (iface, mode, live) in pinned {
        if live {
            println!("  {iface:<16} attached (pinned), mode {mode}");
        } else {
            println!(
                "  {iface:<16} NOT FILTERING: the interface was deleted or re-created and its XDP \
                 link went with it; run `edge attach` again (or `edge detach` to clear the pins)"
            );
        }
    }
    Ok(())
}

async fn visitors_command(
    client: &mut VisitorsClient<Channel>,
    command: VisitorsCommand,
) -> anyhow::Result<()> {
    match command {
        VisitorsCommand::Add { ips, day } => {
            let day = day.unwrap_or_default();
            let visits = ips.into_iter().map(|ip| api::Visit { ip, day: day.clone() }).collect();
            let r = client.record_visits(api::RecordVisitsRequest { visits }).await?.into_inner();
            println!("recorded {} (outside the window: {})", r.recorded, r.outside_window);
        }
        VisitorsCommand::Remove { ips } => {
            let r = client.remove_visitors(api::RemoveVisitorsRequest { ips }).await?.into_inner();
            println!("removed {}", r.removed);
        }
        VisitorsCommand::List { limit, after, json } => {
            let page_token = after.unwrap_or_default();
            let r = client
                .list_visitors(api::ListVisitorsRequest { page_size: limit, page_token })
                .await?
                .into_inner();
            if json {
                return print_json(&r);
            }
            for v in &r.visitors {
                println!("{},{}", v.ip, v.last_seen);
            }
            if !r.next_page_token.is_empty() {
                eprintln!("next: --after {}", r.next_page_token);
            }
        }
        VisitorsCommand::Count { json } => {
            let r = client.count_visitors(api::CountVisitorsRequest {}).await?.into_inner();
            if json {
                return print_json(&r);
            }
            println!("{} visitors ({} IPv4, {} IPv6 /64)", r.total, r.v4, r.v6);
        }
        VisitorsCommand::Import { file, format } => import(client, &file, format).await?,
        VisitorsCommand::Export { file } => {
            let mut stream =
                client.export_visitors(api::ExportVisitorsRequest {}).await?.into_inner();
            let mut out: Box<dyn std::io::Write> = match &file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            while let Some(chunk) = stream.message().await? {
                for v in chunk.visitors {
                    writeln!(out, "{},{}", v.ip, v.last_seen)?;
                    n += 1;
                }
            }
            out.flush()?;
            if let Some(path) = file {
                eprintln!("exported {n} visitors to {}", path.display());
            }
        }
    }
    Ok(())
}

/// Streams the file to the daemon in 1 MiB chunks; the daemon parses and applies it whole.
async fn import(
    client: &mut VisitorsClient<Channel>,
    path: &Path,
    format: String,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(size),
        if std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let file_name = path.display().to_string();
    let bar = progress.clone();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut first = true;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            let n = file.read(&mut chunk)?;
            if n == 0 && !first {
                return Ok(());
            }
            chunk.truncate(n);
            bar.inc(n as u64);
            let message = api::ImportVisitorsRequest {
                format: if first { format.clone() } else { String::new() },
                file_name: if first { file_name.clone() } else { String::new() },
                chunk,
            };
            first = false;
            if tx.blocking_send(message).is_err() {
                return Ok(()); // the daemon answered early (an error)
            }
            if n == 0 {
                return Ok(());
            }
        }
    });
    let answer = client.import_visitors(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    progress.finish_and_clear();
    reader.await??;
    let r = answer?.into_inner();
    println!(
        "imported {}: {} lines, {} visits recorded, {} outside the window",
        path.display(),
        r.lines,
        r.recorded,
        r.outside_window
    );
    Ok(())
}

/// Unix seconds as `2026-11-22T10:00:00Z`.
pub fn utc(at: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(at as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| at.to_string())
}

/// `90s`, `30m`, `12h`, `7d` in seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("`{text}` is not a duration like 30m"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("`{text}`: the unit must be s, m, h or d"),
    };
    Ok(n * scale)
}

async fn rules_command(
    client: &mut RulesClient<Channel>,
    list: &'static str,
    command: RulesCommand,
) -> anyhow::Result<()> {
    match command {
        RulesCommand::Add { cidrs, comment, expires } => {
            let expires_at = match expires {
                Some(d) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_secs();
                    now + parse_duration(&d)?
                }
                None => 0,
            };
            let rules = cidrs
                .into_iter()
                .map(|cidr| api::Rule {
                    list: list.into(),
                    cidr,
                    comment: comment.clone(),
                    expires_at,
                    ..Default::default()
                })
                .collect();
            let r = client.add_rules(api::AddRulesRequest { rules }).await?.into_inner();
            println!("{list}: added {}, updated {}", r.added, r.updated);
        }
        RulesCommand::Remove { cidrs } => {
            let r = client
                .remove_rules(api::RemoveRulesRequest { list: list.into(), cidrs })
                .await?
                .into_inner();
            println!("{list}: removed {}", r.removed);
        }
        RulesCommand::List { json } => {
            let r =
                client.list_rules(api::ListRulesRequest { list: list.into() }).await?.into_inner();
            if json {
                return print_json(&r);
            }
            for rule in r.rules {
                let expires = match rule.expires_at {
                    0 => String::new(),
                    at => format!(" expires {}", utc(at)),
                };
                let comment = if rule.comment.is_empty() {
                    String::new()
                } else {
                    format!(" # {}", rule.comment)
                };
                println!("{:<43} {:<6}{expires}{comment}", rule.cidr, rule.source);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: &str, action: &str, packets: u64) -> Row {
        Row { reason: reason.into(), action: action.into(), packets, bytes: packets * 60 }
    }

    #[test]
    fn rates_per_reason_and_action() {
        let before = [row("visitor", "pass", 100), row("unknown_rate", "drop", 10)];
        let now = [
            row("visitor", "pass", 300),
            row("unknown_rate", "drop", 10),
            row("unknown_rate", "would_drop", 50),
        ];
        assert_eq!(rates(&now, &before, 2.0), vec![100.0, 0.0, 25.0]);
    }

    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90s").unwrap(), 90);
        assert_eq!(super::parse_duration("7d").unwrap(), 7 * 86_400);
        assert!(super::parse_duration("7w").is_err());
        assert!(super::parse_duration("h").is_err());
    }
}
