//! `edge daemon`: owns the filter's state, keeps the kernel maps right, and serves the gRPC API
//! (proto/edge/v1/edge.proto) on a Unix socket, and on TCP with a bearer token if configured.
//!
//! Start-up: recover the store, listen (health NOT_SERVING), attach to every interface or adopt
//! the pins a previous run left (never detaching, never clearing a map), then report SERVING.
//! Every second: roll the window at a UTC day boundary, expire rules, retry interfaces that
//! are not attached yet, compact the log when it grows. SIGTERM/SIGINT: snapshot and exit,
//! leaving the filter attached.
pub mod auto;
pub mod clock;
pub mod core;
pub mod events;
pub mod feed;
pub mod metrics;
pub mod service;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use tokio::net::UnixListener;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{service::Routes, transport::Server, Status};
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use self::{clock::Clock, core::Core, service::Handle};
use crate::{
    api::{
        admissions_server::AdmissionsServer, control_server::ControlServer,
        rules_server::RulesServer, visitors_server::VisitorsServer,
    },
    store::StoreError,
    Error, Policy,
};

/// Why a verb failed, in gRPC's terms.
#[derive(Debug)]
pub enum Fault {
    /// A ticket refused: the `index`-th of the request.
    Refused {
        index: usize,
        refused: crate::ticket::Rejected,
    },
    NotFound(String),
    FailedPrecondition(String),
    ResourceExhausted(String),
    Unavailable(String),
    Internal(String),
}

impl Fault {
    pub fn store(e: StoreError) -> Self {
        match &e {
            StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Self::ResourceExhausted(format!(
                    "the state directory is full; nothing was changed ({e})"
                ))
            }
            _ => Self::Internal(format!("the store failed; nothing was changed ({e})")),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { index, refused } => {
                write!(f, "admissions[{index}]: {} ({refused})", refused.reason())
            }
            Self::NotFound(m)
            | Self::FailedPrecondition(m)
            | Self::ResourceExhausted(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => f.write_str(m),
        }
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        match e {
            Error::MapFull { .. } => Self::ResourceExhausted(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<Fault> for Status {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Refused { ref refused, .. } => match refused {
                crate::ticket::Rejected::Malformed(_) => Status::invalid_argument(f.to_string()),
                _ => Status::permission_denied(f.to_string()),
            },
            Fault::NotFound(m) => Status::not_found(m),
            Fault::FailedPrecondition(m) => Status::failed_precondition(m),
            Fault::ResourceExhausted(m) => Status::resource_exhausted(m),
            Fault::Unavailable(m) => Status::unavailable(m),
            Fault::Internal(m) => Status::internal(m),
        }
    }
}

/// Largest request message: a full batch of visits with room to spare.
const MAX_MESSAGE: usize = 16 << 20;

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
    let learn = policy.learn_handshakes;
    if learn {
        // Refused before anything starts, so a kernel whose tracepoint moved is found now.
        self::events::check_tracepoint_format()
            .map_err(|e| anyhow::anyhow!("learning.handshakes: {e}"))?;
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let routes = Routes::new(health_service)
        .add_service(reflection)
        .add_service(ControlServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(VisitorsServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(RulesServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(AdmissionsServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE));

    let uds = bind_socket(&settings.socket)?;
    info!(socket = %settings.socket.display(), "listening");
    let unix_server = Server::builder()
        .concurrency_limit_per_connection(64)
        .add_routes(routes.clone())
        .serve_with_incoming(UnixListenerStream::new(uds));
    let mut servers = vec![tokio::spawn(unix_server)];
    if let (Some(addr), Some(token_file)) = (settings.tcp_listen, &settings.token_file) {
        let token = read_token(token_file)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (daemon.tcp_listen)"))?;
        info!(%addr, token_file = %token_file.display(), "listening (bearer token)");
        let expected = format!("Bearer {token}");
        let auth = move |request: tonic::Request<()>| {
            let given = request.metadata().get("authorization").map(|v| v.as_bytes());
            match given {
                Some(given) if constant_time_eq(given, expected.as_bytes()) => Ok(request),
                Some(_) => Err(Status::unauthenticated("wrong bearer token")),
                None => Err(Status::unauthenticated("missing `authorization: Bearer <token>`")),
            }
        };
        let tcp_server = Server::builder()
            .concurrency_limit_per_connection(64)
            .layer(tonic::service::InterceptorLayer::new(auth))
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener));
        servers.push(tokio::spawn(tcp_server));
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
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
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
                Ok((core.ready(), core.feed_degraded()))
            })
            .await;
        let (ready, degraded) = match tick {
            Ok(result) => result,
            Err(status) => {
                warn!("periodic work postponed: {}", status.message());
                continue;
            }
        };
        if ready && !readers_started {
            readers_started = true;
            let (iface, top) =
                handle.with(|core| Ok((core.first_attached(), core.top.clone()))).await?;
            let iface = iface.expect("ready means attached");
            if let Err(e) = self::events::read_drops(&iface, top) {
                error!("edge top has no data: {e}");
            }
            if learn {
                match crate::filter::attach_handshakes(&iface) {
                    Ok(ebpf) => {
                        _handshakes = Some(ebpf);
                        let runtime = tokio::runtime::Handle::current();
                        if let Err(e) =
                            self::events::learn_handshakes(&iface, handle.clone(), runtime)
                        {
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
    for task in [feed_task, metrics_task].into_iter().flatten() {
        task.abort();
    }
    if let Err(e) = handle.with(|core| core.compact()).await {
        error!("snapshot failed (the log still holds everything): {}", e.message());
    }
    let _ = std::fs::remove_file(&settings.socket);
    Ok(())
}

/// Binds the API socket (mode 0600). A socket file nobody answers on is a leftover and is
/// replaced; one a daemon answers on is an error.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another edge daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale {}", path.display()))?;
    }
    // Created with no access for anyone but the owner, before anyone can connect.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The bearer token: the file's first line. The file must not be readable by group or others.
fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{}: the token file is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        anyhow::bail!("{}: the token is shorter than 16 characters", path.display());
    }
    Ok(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
