//! How the daemon's answers print: status, top, stats (once or watched), rules. Every write
//! returns its error, so a closed pipe ends the command instead of a panic.
use std::{io::Write as _, time::Duration};

use edge::{
    api,
    stats::{render_table, Row},
    text::{printable, utc},
};

pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

pub fn fleet(s: &api::GetFleetStatusResponse) -> anyhow::Result<()> {
    let state = if s.degraded { format!("DEGRADED: {}", printable(&s.error)) } else { "ok".into() };
    outln!("fleet {} on {} as {}: {state}", s.stream, s.redis, s.node)?;
    outln!("  last contact with Redis: {}", utc(s.last_contact))?;
    let refused: Vec<String> =
        s.refused.iter().map(|r| format!("{} {}", r.count, r.reason)).collect();
    let refused = if refused.is_empty() { "none".to_string() } else { refused.join(", ") };
    outln!(
        "  entries published: {}; changes applied: {}; refused: {refused}; waiting to publish: {}",
        s.published,
        s.applied,
        s.unpublished
    )?;
    if s.snapshot_covers.is_empty() {
        outln!("  snapshot: none yet")?;
    } else {
        outln!(
            "  snapshot: through {}, {} s old, {} bytes",
            s.snapshot_covers,
            s.snapshot_age_s,
            s.snapshot_bytes
        )?;
    }
    outln!(
        "  {:<20} {:<20} {:>22} {:>9} {:>10} {:>6} {:>6}",
        "NODE",
        "LAST REPORT",
        "POSITION",
        "LAG MS",
        "VISITORS",
        "ALLOW",
        "DENY"
    )?;
    for n in &s.nodes {
        let flag = if n.degraded { " (degraded)" } else { "" };
        outln!(
            "  {:<20} {:<20} {:>22} {:>9} {:>10} {:>6} {:>6}{flag}",
            printable(&n.node),
            utc(n.last_contact),
            printable(&n.position),
            n.lag_ms,
            n.visitors,
            n.allow_rules,
            n.deny_rules
        )?;
    }
    Ok(())
}

pub fn status(s: &api::GetStatusResponse) -> anyhow::Result<()> {
    let mode = match &s.auto {
        Some(a) => format!(
            "auto, {} since {} ({} pps unknown; enter >= {} for {} s, leave < {} for {} s; \
             switches: {} to enforce, {} to monitor)",
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
    let ready = if s.ready { "ready" } else { "NOT READY" };
    outln!("edge {}: {ready}, mode {mode}; the kernel runs {}", s.version, s.kernel_mode)?;
    for i in &s.interfaces {
        let adopted = if i.adopted { " (adopted pins)" } else { "" };
        outln!("  {:<16} {}{adopted}", i.name, i.state)?;
    }
    outln!("  today {} (UTC), window {} days, rolled to {}", s.today, s.window_days, s.rolled_to)?;
    if !s.window_hold.is_empty() {
        outln!("  WINDOW HELD: {}", s.window_hold)?;
    }
    outln!(
        "  visitors: {} IPv4, {} IPv6 /64 ({} learned from handshakes since start)",
        s.visitors_v4,
        s.visitors_v6,
        s.learned_visitors
    )?;
    outln!("  rules: {} allow, {} deny", s.allow_rules, s.deny_rules)?;
    let refused: Vec<String> =
        s.admission_rejections.iter().map(|r| format!("{} {}", r.count, r.reason)).collect();
    let refused = if refused.is_empty() { "none".to_string() } else { refused.join(", ") };
    outln!(
        "  admissions: {} held; tickets {} verified, refused: {refused}",
        s.admissions,
        s.tickets_verified
    )?;
    let position = if s.feed_position.is_empty() {
        String::new()
    } else {
        format!(" (at {})", s.feed_position)
    };
    for kind in s.tokens.iter().filter(|k| k.kind != "edge") {
        let refused: Vec<String> =
            kind.refused.iter().map(|r| format!("{} {}", r.count, r.reason)).collect();
        let refused = if refused.is_empty() { "none".to_string() } else { refused.join(", ") };
        outln!(
            "  {} tokens: {} verified, {} sources admitted, refused: {refused}",
            kind.kind,
            kind.verified,
            kind.admitted
        )?;
    }
    if !s.jwks.is_empty() {
        outln!("  jwt keys: {}", printable(&s.jwks))?;
    }
    if !s.admission_endpoint.is_empty() {
        outln!("  admission endpoint: {}", s.admission_endpoint)?;
    }
    outln!("  admission feed: {}{position}", s.feed)?;
    outln!("  fleet: {}", printable(&s.fleet))?;
    for job in &s.failing_jobs {
        outln!(
            "  FAILING: {} since {} ({} failures): {}",
            job.name,
            utc(job.failing_since),
            job.failures,
            printable(&job.error)
        )?;
    }
    outln!("  store: {} ({} bytes of log since the snapshot)", s.state_dir, s.wal_bytes)?;
    Ok(())
}

pub fn top(t: &api::GetTopResponse) -> anyhow::Result<()> {
    if t.sample_every == 0 {
        outln!("drop sampling is off (events.drop_sample = 0)")?;
        return Ok(());
    }
    outln!(
        "dropped over the last {:.0} s (1 in {} drops sampled, {} samples)",
        t.window_s,
        t.sample_every,
        t.samples
    )?;
    for (title, entries) in [("SOURCE", &t.sources), ("PREFIX", &t.prefixes)] {
        outln!("{title:<42} {:>12} {:>9}  REASON", "DROPS/S", "SAMPLES")?;
        if entries.is_empty() {
            outln!("  (none)")?;
        }
        for e in entries {
            outln!("{:<42} {:>12.0} {:>9}  {}", e.key, e.pps, e.samples, e.reason)?;
        }
    }
    Ok(())
}

/// Prints the rows once, or every `watch` seconds with each row's packets per second since the
/// previous print. `--json` is one array per print with every reason (zeros included, so a
/// script finds each reason before any traffic), with `packets_per_second` once known; the
/// table leaves out reasons that counted nothing.
pub async fn stats_loop<F, Fut>(watch: Option<u64>, json: bool, mut fetch: F) -> anyhow::Result<()>
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
            outln!("{}", serde_json::to_string(&out)?)?;
        } else {
            let shown: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].packets > 0).collect();
            let table = render_table(&shown.iter().map(|i| rows[*i].clone()).collect::<Vec<_>>());
            match &rates {
                None => write!(std::io::stdout(), "{table}")?,
                Some(rates) => {
                    let mut lines = table.lines();
                    outln!("{} {:>12}", lines.next().unwrap_or_default(), "PACKETS/S")?;
                    for (line, i) in lines.zip(&shown) {
                        outln!("{line} {:>12.1}", rates[*i])?;
                    }
                }
            }
        }
        let Some(secs) = watch else { return Ok(()) };
        previous = Some((rows, now));
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
        if !json {
            outln!()?;
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

/// A list's rules: expiries as times (and, in JSON, beside the unix seconds), comments on one
/// line whatever they hold.
pub fn rules(rules: &[api::Rule], json: bool) -> anyhow::Result<()> {
    if json {
        let rules: Vec<_> = rules
            .iter()
            .map(|r| {
                let time = |at: u64| (at != 0).then(|| utc(at));
                serde_json::json!({
                    "list": r.list,
                    "cidr": r.cidr,
                    "comment": r.comment,
                    "source": r.source,
                    "expires_at": r.expires_at,
                    "expires": time(r.expires_at),
                    "added_at": r.added_at,
                    "added": time(r.added_at),
                })
            })
            .collect();
        return self::json(&serde_json::json!({ "rules": rules }));
    }
    for rule in rules {
        let expires = match rule.expires_at {
            0 => String::new(),
            at => format!(" expires {}", utc(at)),
        };
        let comment = match rule.comment.as_str() {
            "" => String::new(),
            text => format!(" # {}", printable(text)),
        };
        outln!("{:<43} {:<6}{expires}{comment}", rule.cidr, rule.source)?;
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
}
