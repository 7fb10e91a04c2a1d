//! Prometheus `/metrics` (text format 0.0.4 via the `prometheus` crate, served with axum). Each
//! scrape reads the counters and the daemon's state afresh: per interface and reason
//! packet/byte counters, map occupancy and capacity, the window, the mode, readiness, the
//! admission feed, and tickets verified and refused by reason.
use edge_common::maps as names;
use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::{core::Core, handle::Handle, interfaces::Link, jobs::JOBS};
use crate::token::Kind;

/// The exposition of the daemon's state now. `buckets` is the token-bucket table's occupancy,
/// walked from the pins before the core was locked.
pub fn render(core: &mut Core, buckets: Option<u64>) -> String {
    match build(core, buckets) {
        Ok(registry) => TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n")),
        Err(e) => format!("# building the metrics failed: {e}\n"),
    }
}

fn build(core: &mut Core, buckets: Option<u64>) -> prometheus::Result<Registry> {
    let registry = Registry::new_custom(Some("edge".into()), None)?;
    let counter_vec =
        |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let gauge = |name: &str, help: &str, value: i64| -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(value);
        registry.register(Box::new(g))
    };
    let counter = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    let float_gauge = |name: &str, help: &str, value: f64| -> prometheus::Result<()> {
        let g = Gauge::new(name, help)?;
        g.set(value);
        registry.register(Box::new(g))
    };

    let packets = counter_vec(
        "packets_total",
        "Packets by interface, reason and action.",
        &["interface", "reason", "action"],
    )?;
    let bytes = counter_vec(
        "bytes_total",
        "Bytes by interface, reason and action.",
        &["interface", "reason", "action"],
    )?;
    for iface in &mut core.interfaces {
        if let Link::Attached { counters, .. } = &iface.link {
            let Ok(stats) = counters.read() else { continue };
            for row in stats.rows(true) {
                let l = [iface.name.as_str(), row.reason.as_str(), row.action.as_str()];
                packets.with_label_values(&l).inc_by(row.packets);
                bytes.with_label_values(&l).inc_by(row.bytes);
            }
        }
    }

    let entries =
        gauge_vec("map_entries", "Entries the control plane holds for each map.", &["map"])?;
    let capacity = gauge_vec("map_capacity", "Capacity of each map.", &["map"])?;
    let policy = core.effective_policy();
    for (map, held, cap) in [
        (names::VISITORS_V4, core.history().v4.len(), u64::from(u32::MAX) + 1),
        (names::VISITORS_V6, core.history().v6.len(), u64::from(names::VISITORS_V6_CAPACITY)),
        (names::ADMITTED, core.admissions(), u64::from(names::ADMITTED_CAPACITY)),
        (names::ALLOW, policy.allow.len() as u64, u64::from(names::ALLOW_CAPACITY)),
        (names::DENY, policy.deny.len() as u64, u64::from(names::DENY_CAPACITY)),
    ] {
        entries.with_label_values(&[map]).set(held as i64);
        capacity.with_label_values(&[map]).set(cap as i64);
    }
    // The token buckets are the kernel's own: one table all interfaces share.
    if let Some(held) = buckets {
        entries.with_label_values(&[names::UNKNOWN_BUCKETS]).set(held as i64);
    }
    capacity
        .with_label_values(&[names::UNKNOWN_BUCKETS])
        .set(i64::from(names::UNKNOWN_BUCKETS_CAPACITY));

    gauge(
        "window_length_seconds",
        "Length of the visitor window.",
        i64::from(core.policy.window_days) * 86_400,
    )?;
    gauge(
        "window_start_timestamp_seconds",
        "Start (UTC midnight) of the first day inside the visitor window.",
        i64::from(crate::history::window_start(core.rolled_to(), core.policy.window_days).0)
            * 86_400,
    )?;
    gauge("ready", "1 when the filter is attached to every interface.", i64::from(core.ready()))?;
    let attached = gauge_vec(
        "interface_attached",
        "1 while the filter is attached to the interface, 0 while it waits (the device is gone, \
         the pins are another build's, ...; `edge status` says why).",
        &["interface"],
    )?;
    for iface in &core.interfaces {
        let up = matches!(iface.link, Link::Attached { .. });
        attached.with_label_values(&[iface.name.as_str()]).set(i64::from(up));
    }
    let mode = gauge_vec("mode", "The mode asked for (1) and the others (0).", &["mode"])?;
    let current = core.mode().to_string();
    for m in ["off", "monitor", "enforce", "auto"] {
        mode.with_label_values(&[m]).set(i64::from(current == m));
    }
    gauge(
        "enforcing",
        "1 when the kernel drops: mode enforce, or auto in its attack phase.",
        i64::from(core.kernel_mode() == crate::Mode::Enforce),
    )?;
    let switches =
        counter_vec("auto_switches_total", "Mode switches made by auto since start.", &["to"])?;
    switches.with_label_values(&["enforce"]).inc_by(core.auto.to_enforce);
    switches.with_label_values(&["monitor"]).inc_by(core.auto.to_monitor);
    gauge(
        "unknown_global_budget_pps",
        "The global budget of unknown traffic the kernel runs now (unknown.global_pps, or the \
         outage ceiling while the feed is degraded); 0 = none passes.",
        i64::from(policy.unknown.global_pps),
    )?;
    float_gauge(
        "unknown_packets_per_second",
        "Packets per second from sources on no list (all interfaces), measured each second.",
        core.auto.unknown_pps,
    )?;
    let feed = gauge_vec(
        "admission_feed",
        "The admission feed's state (1 for the current one).",
        &["state"],
    )?;
    let state = core.feed_state();
    let state = state.split(':').next().unwrap_or("off");
    for s in ["off", "ok", "degraded"] {
        feed.with_label_values(&[s]).set(i64::from(state == s));
    }
    if core.feed_configured() {
        gauge(
            "admission_feed_last_contact_timestamp_seconds",
            "When the admission feed last answered (unix seconds).",
            core.feed.ok_at as i64,
        )?;
        float_gauge(
            "admission_feed_lag_seconds",
            "Age of the newest applied feed entry when it was applied (from its stream id).",
            core.feed.lag_s,
        )?;
    }
    counter(
        "visitors_learned_total",
        "Visitors recorded from completed TCP handshakes since the daemon started.",
        core.learned,
    )?;
    let tokens = core.tokens.counts();
    counter(
        "tickets_verified_total",
        "Tickets verified by the daemon since it started.",
        tokens.verified.get(&Kind::Edge).copied().unwrap_or(0),
    )?;
    let refused = counter_vec(
        "tickets_refused_total",
        "Tickets refused by the daemon since it started.",
        &["reason"],
    )?;
    let edge_refused: std::collections::BTreeMap<_, _> = tokens.refused_of(Kind::Edge).collect();
    for reason in ["malformed", "unknown_key", "bad_hash", "expired", "wrong_ip"] {
        refused.with_label_values(&[reason]).inc_by(edge_refused.get(reason).copied().unwrap_or(0));
    }
    let verified = counter_vec(
        "tokens_verified_total",
        "Admission tokens whose form, signature and claims held, by kind (edge, queueit, jwt).",
        &["kind"],
    )?;
    let admitted = counter_vec(
        "tokens_admitted_total",
        "Sources admitted by a token, by kind (a verified token may still be refused as replayed).",
        &["kind"],
    )?;
    for kind in core.tokens.verifiers().kinds() {
        let name = [kind.name()];
        verified.with_label_values(&name).inc_by(tokens.verified.get(&kind).copied().unwrap_or(0));
        admitted.with_label_values(&name).inc_by(tokens.admitted.get(&kind).copied().unwrap_or(0));
    }
    let refused = counter_vec(
        "tokens_refused_total",
        "Admission tokens refused, by kind and reason (replayed: presented from more sources \
         than admission.max_sources).",
        &["kind", "reason"],
    )?;
    // Every reason of every configured kind, at zero until it happens: a rate over a series
    // that does not exist yet is no rate at all.
    for kind in core.tokens.verifiers().kinds() {
        for reason in kind.reasons() {
            refused.with_label_values(&[kind.name(), reason]).inc_by(0);
        }
    }
    for ((kind, reason), count) in &tokens.refused {
        refused.with_label_values(&[kind, reason]).inc_by(*count);
    }
    if core.policy.admission.http.is_some() {
        let requests = counter_vec(
            "admission_endpoint_requests_total",
            "Requests the admission endpoint answered, by outcome (admitted, refused, bad_target, \
             busy, unavailable, not_found).",
            &["outcome"],
        )?;
        let outcomes = core.endpoint.snapshot();
        for outcome in super::endpoint::OUTCOMES {
            requests
                .with_label_values(&[outcome])
                .inc_by(outcomes.get(outcome).copied().unwrap_or(0));
        }
    }
    if let Some((keys, age)) = core.tokens.jwks_held(core.clock.now()) {
        gauge(
            "jwks_keys",
            "JWT keys held from admission.jwt.jwks_url (0 before the first good fetch: every JWT \
             is refused).",
            keys as i64,
        )?;
        if let Some(age) = age {
            gauge(
                "jwks_age_seconds",
                "Age of the JWT keys fetched from admission.jwt.jwks_url; past jwks_max_age_s \
                 every JWT is refused.",
                age as i64,
            )?;
        }
    }
    let failing = gauge_vec(
        "background_job_failing",
        "1 while the periodic job fails (`edge status` says why), 0 while it works.",
        &["job"],
    )?;
    let failures = counter_vec(
        "background_job_failures_total",
        "Failed runs of each periodic job since the daemon started.",
        &["job"],
    )?;
    for job in JOBS {
        let state = core.jobs.get(job);
        failing.with_label_values(&[job]).set(i64::from(state.failing_since.is_some()));
        failures.with_label_values(&[job]).inc_by(state.failures);
    }
    gauge(
        "window_held",
        "1 while the visitor window is held back from a clock that jumped forward (roll it \
         with `edge window roll` if the clock is right).",
        i64::from(core.window_hold.is_some()),
    )?;
    if let Some(link) = &core.fleet {
        gauge(
            "fleet_degraded",
            "1 while this node cannot reach the fleet's Redis (it enforces and learns locally).",
            i64::from(link.degraded),
        )?;
        gauge(
            "fleet_last_contact_timestamp_seconds",
            "When the fleet's Redis last answered (unix seconds).",
            link.ok_at as i64,
        )?;
        gauge("fleet_peers", "Other nodes that have reported to the fleet.", {
            link.nodes.iter().filter(|n| n.node != link.settings.node).count() as i64
        })?;
        let newest = link.nodes.iter().filter_map(|n| crate::fleet::stream_id(&n.position)).max();
        let mine = core.fleet_position();
        let lag_ms = match (newest, mine.as_deref().and_then(crate::fleet::stream_id)) {
            (Some(newest), Some(at)) => newest.0.saturating_sub(at.0),
            _ => 0,
        };
        float_gauge(
            "fleet_lag_seconds",
            "How far this node's stream position is behind the furthest node's (by stream id).",
            lag_ms as f64 / 1000.0,
        )?;
        gauge(
            "fleet_unpublished_changes",
            "Changes made here that are not in the fleet's stream yet.",
            core.fleet_unpublished() as i64,
        )?;
        counter(
            "fleet_published_entries_total",
            "Entries this node added to the fleet's stream since it started.",
            link.published,
        )?;
        counter(
            "fleet_applied_changes_total",
            "Other nodes' changes this node applied since it started.",
            link.applied,
        )?;
        let refused = counter_vec(
            "fleet_refused_entries_total",
            "Fleet entries refused since the daemon started (bad_mac: not made with the fleet \
             key).",
            &["reason"],
        )?;
        for reason in
            ["malformed", "unknown_key", "bad_mac", "wrong_node", "future_stamp", "invalid"]
        {
            refused
                .with_label_values(&[reason])
                .inc_by(link.refused.get(reason).copied().unwrap_or(0));
        }
    }
    Ok(registry)
}

/// How many token buckets the (shared) table holds, walked from the first attached interface's
/// pins without the core's lock (a full table is a million keys).
async fn bucket_count(handle: &Handle) -> Option<u64> {
    let iface = handle.with(|core| Ok(core.first_attached())).await.ok().flatten()?;
    tokio::task::spawn_blocking(move || crate::filter::pinned_bucket_count(&iface).ok())
        .await
        .ok()
        .flatten()
}

/// Serves `/metrics` on `addr` until the task is dropped.
pub async fn serve(addr: std::net::SocketAddr, handle: Handle) -> anyhow::Result<()> {
    use axum::{http::header, response::IntoResponse, routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                let buckets = bucket_count(&handle).await;
                match handle.with(move |core| Ok(render(core, buckets))).await {
                    Ok(body) => {
                        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
                            .into_response()
                    }
                    Err(status) => {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, status.message().to_string())
                            .into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
