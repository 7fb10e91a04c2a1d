//! `edge daemon`: owns the filter's state, keeps the kernel maps right, and serves the gRPC API
//! (proto/edge/v1/edge.proto) on a Unix socket, and on TCP with a bearer token if configured.
//!
//! Start-up: recover the store, listen (health NOT_SERVING), attach to every interface or adopt
//! the pins a previous run left (never detaching, never clearing a map), then report SERVING.
//! Every second: roll the window at a UTC day boundary, expire rules, retry interfaces that
//! are not attached yet, compact the log when it grows. SIGTERM/SIGINT: snapshot and exit,
//! leaving the filter attached.
pub mod admissions;
pub mod auto;
pub mod clock;
pub mod core;
pub mod endpoint;
pub mod events;
pub mod fault;
pub mod feed;
pub mod feed_health;
pub mod fleet;
pub mod fleet_health;
pub mod fleet_sync;
pub mod handle;
pub mod interfaces;
pub mod jobs;
pub mod jwks_fetch;
pub mod listen;
pub mod metrics;
pub mod mode;
pub mod netlink;
pub mod reload;
pub mod rules;
pub mod service;
pub mod tokens;
pub mod top;
pub mod unix_relay;
pub mod visits;
pub mod window;

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

pub use self::fault::Fault;
use self::{clock::Clock, core::Core, handle::Handle};
use crate::Policy;

/// The health service name that is NOT_SERVING while a periodic job fails.
pub const BACKGROUND_HEALTH: &str = "edge.v1.Background";
/// The health service name that is NOT_SERVING while the fleet is degraded.
pub const FLEET_HEALTH: &str = "edge.v1.Fleet";

/// How the daemon writes its log (stderr; journald adds nothing but the unit's name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, human-readable, with key=value fields.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The environment variable that filters the log: a level (`debug`) or per-module directives
/// (`info,edge::daemon::feed=debug`), as in `RUST_LOG`. Default: `info`.
pub const LOG_FILTER_ENV: &str = "EDGE_LOG";

/// Installs the global subscriber. Kernel-side logging does not exist in the packet path: the
/// sampled drop events are the only per-packet data, logged at `debug` under `edge::events`.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let policy = Policy::load(config_path)?;
    // Absolute, so `config show` and errors name the file wherever the daemon was started.
    let config_path = &std::fs::canonicalize(config_path)?;
    let settings = policy.daemon.clone().with_context(|| {
        format!("{}: no [daemon] table (interfaces, state_dir, socket)", config_path.display())
    })?;
    let clock = Clock::from_env();
    if let Clock::File(path) = &clock {
        warn!(
            "the day comes from {} ({}), not the system clock",
            path.display(),
            clock::CLOCK_FILE_ENV
        );
    }
    let feed = policy.admission.feed.clone();
    let fleet = policy.fleet.clone();
    let endpoint = policy.admission.http.clone();
    let jwks_url = match policy.admission.jwt.as_ref().map(|j| &j.keys) {
        Some(crate::policy::JwksSource::Url { url, ca_file, refresh_s, .. }) => {
            Some((url.clone(), ca_file.clone(), u64::from(*refresh_s)))
        }
        _ => None,
    };
    let learn = policy.learn_handshakes;
    if learn {
        // Refused before anything starts, so a kernel whose tracepoint moved is found now.
        self::events::check_tracepoint_format()
            .map_err(|e| anyhow::anyhow!("learning.handshakes: {e}"))?;
    }
    if policy.syn_cookies.mode != crate::policy::SynCookieMode::Off {
        // Refused before anything starts: the program would answer SYNs the kernel cannot
        // turn into connections.
        crate::syncookies::Host::current()?.check()?;
    }
    let (core, recovery) = Core::open(config_path, policy, clock.clone())?;
    if recovery.torn_bytes > 0 {
        warn!(bytes = recovery.torn_bytes, "cut off the torn tail of an unacknowledged record");
    }
    info!(
        state_dir = %settings.state_dir.display(),
        snapshot_seq = recovery.snapshot_seq,
        replayed = recovery.replayed,
        visitors = core.history().len(),
        "store recovered"
    );
    let handle = Handle::new(core, clock);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    let routes = listen::routes(&handle, health_service)?;
    let mut servers = vec![listen::serve_unix(&settings.socket, routes.clone())?];
    if let Some(tcp) = &settings.tcp {
        servers.push(listen::serve_tcp(tcp, routes).await?);
    }

    let metrics_task = match settings.metrics_listen {
        Some(addr) => {
            // Bound here so a taken port fails start-up with a clear error, not later.
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("listening on {addr} (daemon.metrics_listen; \"\" turns metrics off)")
            })?;
            info!("metrics on http://{addr}/metrics");
            let handle = handle.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = self::metrics::serve(addr, handle).await {
                    error!("metrics: {e:#}");
                }
            }))
        }
        None => None,
    };
    let feed_task = feed.map(|feed| {
        info!(redis = %feed.redis_url, stream = %feed.stream, "admission feed: reading");
        tokio::spawn(self::feed::run(handle.clone(), feed))
    });
    let fleet_task = fleet.map(|fleet| {
        info!(
            redis = %fleet.redis_url_redacted(),
            node = %fleet.node,
            stream = %fleet.stream,
            "fleet: sharing state"
        );
        tokio::spawn(self::fleet_sync::run(handle.clone(), fleet))
    });

    let jwks_task = jwks_url.map(|(url, ca_file, refresh_s)| {
        let keys = handle.tokens.verifiers().jwt.as_ref().expect("jwt configured").keys.clone();
        let cache = self::jwks_fetch::cache_path(&settings.state_dir);
        tokio::spawn(self::jwks_fetch::run(handle.clone(), keys, url, ca_file, refresh_s, cache))
    });
    let endpoint_task = match endpoint {
        Some(endpoint) => {
            // Bound here so a taken port or a bad certificate fails start-up clearly.
            let bound = self::endpoint::bind(&endpoint)?;
            Some(tokio::spawn(self::endpoint::serve(handle.clone(), endpoint, bound)))
        }
        None => None,
    };

    // Attach or adopt, then report SERVING; afterwards, the periodic work.
    let mut serving = false;
    // The ring readers and the handshake tracepoint start once the shared maps are pinned.
    let mut readers_started = false;
    let mut _handshakes: Option<aya::Ebpf> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // An interface deleted or made again is attached again as soon as the kernel says so.
    let mut links = match self::netlink::watch(settings.interfaces.clone()) {
        Ok(links) => Some(links),
        Err(e) => {
            warn!("no link notifications ({e}); interfaces are checked every second");
            None
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(iface) = async { links.as_mut()?.recv().await }, if links.is_some() => {
                let followed = handle.with(|core| {
                    core.follow_links();
                    Ok(())
                });
                if let Err(status) = followed.await {
                    warn!(%iface, "link change not followed yet: {}", status.message());
                }
                continue;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hangup.recv() => {
                // The reload logs what changed; a refusal is logged here, and nothing changes.
                if let Err(status) = handle.with(|core| core.reload()).await {
                    error!("SIGHUP: {}", status.message());
                }
                continue;
            }
        }
        let tick = handle
            .with(|core| {
                core.tick();
                let fleet_ok = core.fleet_ok();
                Ok((
                    core.ready(),
                    core.feed.degraded,
                    core.jobs.failing().next().is_none(),
                    fleet_ok,
                ))
            })
            .await;
        let (ready, degraded, jobs_ok, fleet_ok) = match tick {
            Ok(result) => result,
            Err(status) => {
                warn!("periodic work postponed: {}", status.message());
                continue;
            }
        };
        if ready && !readers_started {
            // A core busy past the lock wait postpones this to the next tick, like the tick.
            let Ok((Some(iface), top)) =
                handle.with(|core| Ok((core.first_attached(), core.top.clone()))).await
            else {
                continue;
            };
            readers_started = true;
            if let Err(e) = self::events::read_drops(&iface, top) {
                error!("edge top has no data: {e}");
            }
            if learn {
                match crate::filter::attach_handshakes(&iface) {
                    Ok(ebpf) => {
                        _handshakes = Some(ebpf);
                        let runtime = tokio::runtime::Handle::current();
                        if let Err(e) = self::events::learn_handshakes(
                            &iface,
                            settings.interfaces.clone(),
                            handle.clone(),
                            runtime,
                        ) {
                            error!("visitor learning is off: {e}");
                        } else {
                            info!("learning visitors from completed handshakes on protected ports");
                        }
                    }
                    Err(e) => error!("visitor learning is off: {e}"),
                }
            }
        }
        // The filter still serves when the queue feed is out; the admissions service does not.
        let admissions =
            if ready && !degraded { ServingStatus::Serving } else { ServingStatus::NotServing };
        health.set_service_status("edge.v1.Admissions", admissions).await;
        // A background job failing (a roll held, rules not expiring, ...) does not stop the
        // filter; it is its own health entry, for monitors and `edge status`.
        let background = if jobs_ok { ServingStatus::Serving } else { ServingStatus::NotServing };
        health.set_service_status(BACKGROUND_HEALTH, background).await;
        // Cut off from the fleet, the node still filters from its own store.
        if let Some(ok) = fleet_ok {
            let fleet = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status(FLEET_HEALTH, fleet).await;
        }
        if ready != serving {
            serving = ready;
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in
                ["", "edge.v1.Control", "edge.v1.Visitors", "edge.v1.Rules", "edge.v1.Admissions"]
            {
                health.set_service_status(name, status).await;
            }
            if ready {
                info!("ready (health: SERVING)")
            } else {
                warn!("not ready (health: NOT_SERVING)")
            }
        }
    }

    info!("stopping: writing a snapshot; the filter stays attached");
    for server in &servers {
        server.abort();
    }
    for task in
        [feed_task, metrics_task, fleet_task, jwks_task, endpoint_task].into_iter().flatten()
    {
        task.abort();
    }
    if let Err(e) = handle.with(|core| core.compact()).await {
        error!("snapshot failed (the log still holds everything): {}", e.message());
    }
    let _ = std::fs::remove_file(&settings.socket);
    Ok(())
}
