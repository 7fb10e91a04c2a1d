//! `edge status` and `edge stats` while the daemon does not answer: what the pins say. The
//! filter keeps running without its daemon, so its counters and mode are still there to read.
use anyhow::bail;
use edge::{client::Target, stats::Row};

use crate::{args::Command, render};

/// Runs `status` or `stats` from the pins; `why` says what happened to the daemon.
pub async fn run(target: &Target, command: Command, why: &str) -> anyhow::Result<()> {
    let socket = match target {
        Target::Unix(path) => path.display().to_string(),
        Target::Tcp(tcp) => tcp.url.clone(),
    };
    match command {
        Command::Status { json } => status(&socket, why, json),
        Command::Stats { iface, watch, json } => {
            eprintln!("edge: the daemon at {socket} is {why}; reading the pins");
            render::stats_loop(watch, json, || rows(iface.clone())).await
        }
        _ => unreachable!("only status and stats read the pins"),
    }
}

async fn rows(iface: Option<String>) -> anyhow::Result<Vec<Row>> {
    let interfaces = match iface {
        Some(i) => vec![i],
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
    Ok(total.expect("at least one interface").rows(true))
}

fn status(socket: &str, why: &str, json: bool) -> anyhow::Result<()> {
    let interfaces = edge::filter::pinned_interfaces()?;
    // (name, mode, whether its link still has a device: the kernel detaches it with one)
    let pinned: Vec<(String, String, bool)> = interfaces
        .iter()
        .map(|i| {
            // Pins another edge version left (a config record of another size) still show.
            let mode = match edge::filter::pinned_mode(i) {
                Ok(mode) => mode.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            Ok((i.clone(), mode, edge::filter::pinned_link_live(i)?))
        })
        .collect::<anyhow::Result<_>>()?;
    if json {
        let attached: Vec<_> = pinned
            .iter()
            .map(|(i, m, live)| serde_json::json!({ "name": i, "mode": m, "live": live }))
            .collect();
        return render::json(&serde_json::json!({ "daemon": "unreachable", "attached": attached }));
    }
    outln!("edge daemon: {why} at {socket}")?;
    if pinned.is_empty() {
        outln!("  not attached to any interface")?;
    }
    for (iface, mode, live) in pinned {
        if live {
            outln!("  {iface:<16} attached (pinned), mode {mode}")?;
        } else {
            outln!(
                "  {iface:<16} NOT FILTERING: the interface was deleted or re-created and its XDP \
                 link went with it; run `edge attach` again (or `edge detach` to clear the pins)"
            )?;
        }
    }
    Ok(())
}
