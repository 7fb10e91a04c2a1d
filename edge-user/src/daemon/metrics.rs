//! Prometheus `/metrics` (text format 0.0.4 via the `prometheus` crate, served with axum). Each
//! scrape reads the counters and the daemon's state afresh: per interface and reason
//! packet/byte counters, map occupancy and capacity, the window, the mode, readiness, the
//! admission feed, and tickets verified and refused by reason.
use edge_common::maps as names;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::{
    core::{Core, Link},
    service::Handle,
};

/// The exposition of the daemon's state now.
pub fn render(core: &mut Core) -> String {
    match build(core) {
        Ok(registry) => TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n")),
        Err(e) => format!("# building the metrics failed: {e}\n"),
    }
}

fn build(core: &mut Core) -> prometheus::Result<Registry> {
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
        if let Link::Attached { maps, .. } = &mut iface.link {
            let Ok(stats) = maps.stats() else { continue };
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
    let mode = gauge_vec("mode", "The mode in force (1) and the others (0).", &["mode"])?;
    let current = core.mode().to_string();
    for m in ["off", "monitor", "enforce"] {
        mode.with_label_values(&[m]).set(i64::from(current == m));
    }
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
    let verified = IntCounter::new(
        "tickets_verified_total",
        "Tickets verified by the daemon since it started.",
    )?;
    verified.inc_by(core.verified);
    registry.register(Box::new(verified))?;
    let refused = counter_vec(
        "tickets_refused_total",
        "Tickets refused by the daemon since it started.",
        &["reason"],
    )?;
    for reason in ["malformed", "unknown_key", "bad_hash", "expired", "wrong_ip"] {
        refused
            .with_label_values(&[reason])
            .inc_by(core.rejections.get(reason).copied().unwrap_or(0));
    }
    Ok(registry)
}

/// Serves `/metrics` on `addr` until the task is dropped.
pub async fn serve(addr: std::net::SocketAddr, handle: Handle) -> anyhow::Result<()> {
    use axum::{http::header, response::IntoResponse, routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                match handle.with(|core| Ok(render(core))).await {
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
