//! The commands that talk to the daemon. Thin: parse arguments, make one API call, print.
//! `status` and `stats` fall back to the pins when the daemon does not answer.
use std::{
    io::{IsTerminal as _, Read as _, Write as _},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context as _};
use edge::{
    api::{
        self, control_client::ControlClient, rules_client::RulesClient,
        visitors_client::VisitorsClient,
    },
    client::{ApiChannel, Target},
    stats::Row,
    text::{parse_duration, utc},
};
use tonic::Code;

use crate::{
    args::{
        Command, ConfigCommand, Connection, FleetCommand, RulesCommand, VisitorsCommand,
        WindowCommand,
    },
    offline, render,
};

pub fn run(connection: &Connection, command: Command) -> anyhow::Result<()> {
    let target = connection.target()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let channel = edge::client::connect(&target).await;
        let read_only = matches!(command, Command::Status { .. } | Command::Stats { .. });
        let channel = match channel {
            Ok(channel) => channel,
            Err(e) if read_only && matches!(target, Target::Unix(_)) => {
                return offline::run(&target, command, &format!("not reachable ({e})")).await;
            }
            Err(e) => bail!(
                "cannot reach the edge daemon at {} ({e}); is `edge daemon` running? \
                 (--socket or EDGE_SOCKET pick another)",
                describe(&target)
            ),
        };
        let what = name(&command);
        match call(channel, &command).await {
            Ok(()) => Ok(()),
            // The daemon died between the connect and its answer (a kill -9 leaves the socket
            // file behind): what can be read still comes from the pins.
            Err(e) if read_only && cut_off(&e) && matches!(target, Target::Unix(_)) => {
                offline::run(&target, command, "gone while answering").await
            }
            Err(e) => Err(explain(e, what)),
        }
    })
}

fn describe(target: &Target) -> String {
    match target {
        Target::Unix(path) => path.display().to_string(),
        Target::Tcp(tcp) => tcp.url.clone(),
    }
}

/// The command's words, for messages (`visitors import`).
fn name(command: &Command) -> &'static str {
    match command {
        Command::Visitors(VisitorsCommand::Import { .. }) => "visitors import",
        Command::Visitors(VisitorsCommand::Add { .. }) => "visitors add",
        Command::Visitors(VisitorsCommand::Remove { .. }) => "visitors remove",
        Command::Allow(_) | Command::Deny(_) => "the rule change",
        Command::Mode { .. } => "mode",
        Command::Window(_) => "window roll",
        Command::Config(ConfigCommand::Reload { .. }) => "config reload",
        _ => "the command",
    }
}

/// Whether the call failed because the connection broke (the daemon died mid-call), not
/// because the daemon answered with an error.
fn cut_off(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>().is_some_and(|status| {
        use std::error::Error as _;
        status.source().is_some()
            && matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            )
    })
}

/// `CODE: message`, with the gRPC code spelled as in the .proto's documentation; a broken
/// connection says that the outcome of a change is unknown, and how to find out.
fn explain(e: anyhow::Error, what: &str) -> anyhow::Error {
    if cut_off(&e) {
        return anyhow::anyhow!(
            "the connection to the daemon broke before it answered ({e}): {what} may or may not \
             have been applied. Once the daemon is back, check with `edge status`, `edge visitors \
             count` or `edge allow|deny list`"
        );
    }
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
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Internal => "INTERNAL",
        _ => "ERROR",
    }
}

async fn call(channel: ApiChannel, command: &Command) -> anyhow::Result<()> {
    let mut control = ControlClient::new(channel.clone());
    match command {
        Command::Status { json } => {
            let s = control.get_status(api::GetStatusRequest {}).await?.into_inner();
            if *json {
                return render::json(&s);
            }
            render::status(&s)?;
        }
        Command::Mode { mode } => {
            let r =
                control.set_mode(api::SetModeRequest { mode: mode.clone() }).await?.into_inner();
            outln!("mode: {} (was {})", r.mode, r.previous)?;
        }
        Command::Window(WindowCommand::Roll) => {
            let r = control.roll_window(api::RollWindowRequest {}).await?.into_inner();
            if r.rolled {
                outln!(
                    "rolled the window from {} to {}: {} visitors left it",
                    r.from,
                    r.to,
                    r.left
                )?;
            } else {
                outln!("the window already follows the clock; nothing to roll")?;
            }
        }
        Command::Fleet(FleetCommand::Status { json }) => {
            let s = control.get_fleet_status(api::GetFleetStatusRequest {}).await?.into_inner();
            if *json {
                return render::json(&s);
            }
            render::fleet(&s)?;
        }
        Command::Config(ConfigCommand::Show { json }) => {
            let c = control.get_config(api::GetConfigRequest {}).await?.into_inner();
            if *json {
                return render::json(&c);
            }
            outln!("# {} (mode from {})", c.path, c.mode_source)?;
            write!(std::io::stdout(), "{}", c.toml)?;
        }
        Command::Config(ConfigCommand::Reload { json }) => {
            let r = control.reload_config(api::ReloadConfigRequest {}).await?.into_inner();
            if *json {
                return render::json(&r);
            }
            if r.changes.is_empty() {
                outln!("{}: reloaded; nothing changed", r.path)?;
            }
            for change in &r.changes {
                outln!("{}: {change}", r.path)?;
            }
        }
        Command::Top { limit, watch, json } => loop {
            let t = control.get_top(api::GetTopRequest { limit: *limit }).await?.into_inner();
            if *json {
                outln!("{}", serde_json::to_string(&t)?)?;
            } else {
                render::top(&t)?;
            }
            let Some(secs) = watch else { break };
            std::io::stdout().flush()?;
            tokio::time::sleep(Duration::from_secs((*secs).max(1))).await;
        },
        Command::Stats { iface, watch, json } => {
            let interface = iface.clone().unwrap_or_default();
            render::stats_loop(*watch, *json, || {
                let mut control = control.clone();
                let interface = interface.clone();
                async move {
                    let r = control.get_stats(api::GetStatsRequest { interface }).await?;
                    Ok(r.into_inner().rows.into_iter().map(row_of).collect())
                }
            })
            .await?;
        }
        Command::Visitors(command) => {
            let mut client = VisitorsClient::new(channel).max_decoding_message_size(64 << 20);
            visitors(&mut client, command).await?
        }
        Command::Allow(command) => rules(&mut RulesClient::new(channel), "allow", command).await?,
        Command::Deny(command) => rules(&mut RulesClient::new(channel), "deny", command).await?,
        _ => unreachable!("main() hands only the daemon's commands to remote::run"),
    }
    Ok(())
}

fn row_of(r: api::StatsRow) -> Row {
    Row { reason: r.reason, action: r.action, packets: r.packets, bytes: r.bytes }
}

async fn visitors(
    client: &mut VisitorsClient<ApiChannel>,
    command: &VisitorsCommand,
) -> anyhow::Result<()> {
    match command {
        VisitorsCommand::Add { ips, day } => {
            let day = day.clone().unwrap_or_default();
            let visits =
                ips.iter().map(|ip| api::Visit { ip: ip.clone(), day: day.clone() }).collect();
            let r = client.record_visits(api::RecordVisitsRequest { visits }).await?.into_inner();
            outln!("recorded {} (outside the window: {})", r.recorded, r.outside_window)?;
        }
        VisitorsCommand::Remove { ips } => {
            let request = api::RemoveVisitorsRequest { ips: ips.clone() };
            let r = client.remove_visitors(request).await?.into_inner();
            outln!("removed {}", r.removed)?;
        }
        VisitorsCommand::List { limit, after, json } => {
            let page_token = after.clone().unwrap_or_default();
            let r = client
                .list_visitors(api::ListVisitorsRequest { page_size: *limit, page_token })
                .await?
                .into_inner();
            if *json {
                return render::json(&r);
            }
            for v in &r.visitors {
                outln!("{},{}", v.ip, v.last_seen)?;
            }
            if !r.next_page_token.is_empty() {
                eprintln!("next: --after {}", r.next_page_token);
            }
        }
        VisitorsCommand::Count { json } => {
            let r = client.count_visitors(api::CountVisitorsRequest {}).await?.into_inner();
            if *json {
                return render::json(&r);
            }
            outln!("{} visitors ({} IPv4, {} IPv6 /64)", r.total, r.v4, r.v6)?;
        }
        VisitorsCommand::Import { file, format } => import(client, file, format.clone()).await?,
        VisitorsCommand::Export { file } => {
            let mut stream =
                client.export_visitors(api::ExportVisitorsRequest {}).await?.into_inner();
            let mut out: Box<dyn std::io::Write> = match file {
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
    client: &mut VisitorsClient<ApiChannel>,
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
    outln!(
        "imported {}: {} lines, {} visits recorded, {} outside the window",
        path.display(),
        r.lines,
        r.recorded,
        r.outside_window
    )?;
    Ok(())
}

async fn rules(
    client: &mut RulesClient<ApiChannel>,
    list: &'static str,
    command: &RulesCommand,
) -> anyhow::Result<()> {
    match command {
        RulesCommand::Add { cidrs, comment, expires } => {
            let expires_at = match expires {
                Some(d) => {
                    let after = parse_duration(d).map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_secs();
                    now + after
                }
                None => 0,
            };
            let rules = cidrs
                .iter()
                .map(|cidr| api::Rule {
                    list: list.into(),
                    cidr: cidr.clone(),
                    comment: comment.clone(),
                    expires_at,
                    ..Default::default()
                })
                .collect();
            let r = client.add_rules(api::AddRulesRequest { rules }).await?.into_inner();
            let until = match expires_at {
                0 => String::new(),
                at => format!(", expiring {}", utc(at)),
            };
            outln!("{list}: added {}, updated {}{until}", r.added, r.updated)?;
        }
        RulesCommand::Remove { cidrs } => {
            let request = api::RemoveRulesRequest { list: list.into(), cidrs: cidrs.clone() };
            let r = client.remove_rules(request).await?.into_inner();
            outln!("{list}: removed {}", r.removed)?;
        }
        RulesCommand::List { json } => {
            let r =
                client.list_rules(api::ListRulesRequest { list: list.into() }).await?.into_inner();
            render::rules(&r.rules, *json)?;
        }
    }
    Ok(())
}
