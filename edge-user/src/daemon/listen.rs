//! The API's listeners: the Unix socket (mode 0600, for the `edge` command and local tools)
//! and, if configured, TCP with a bearer token, over TLS unless plaintext was asked for.
//!
//! Beside the edge.v1 services: the standard health service and server reflection (v1 and
//! v1alpha, so grpcurl and the grpcio reflection client both list the services).
use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;
use tokio::{net::UnixListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    service::Routes,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
    Status,
};
use tracing::{info, warn};

use super::handle::Handle;
use crate::{
    api::{
        admissions_server::AdmissionsServer, control_server::ControlServer,
        rules_server::RulesServer, visitors_server::VisitorsServer,
    },
    policy::TcpApi,
};

/// Largest request message: a full batch of visits with room to spare.
const MAX_MESSAGE: usize = 16 << 20;
/// Requests one connection may have in flight.
const PER_CONNECTION: usize = 64;

/// Every service the daemon serves.
pub fn routes(
    handle: &Handle,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<Routes> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().context("building the reflection service")?;
    let v1alpha = reflection().build_v1alpha().context("building the reflection service")?;
    Ok(Routes::new(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(ControlServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(VisitorsServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(RulesServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(AdmissionsServer::new(handle.clone()).max_decoding_message_size(MAX_MESSAGE)))
}

/// Serves `routes` on the Unix socket at `path`.
pub fn serve_unix(
    path: &Path,
    routes: Routes,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let listener = bind_socket(path)?;
    info!(socket = %path.display(), "listening");
    let incoming = super::unix_relay::relay(listener);
    let server = Server::builder()
        .concurrency_limit_per_connection(PER_CONNECTION)
        .add_routes(routes)
        .serve_with_incoming(incoming);
    Ok(tokio::spawn(server))
}

/// Serves `routes` on TCP: every call must carry the bearer token; over TLS (with client
/// certificates if a CA is configured), or plaintext if the config asked for it by name.
pub async fn serve_tcp(
    tcp: &TcpApi,
    routes: Routes,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let token = read_token(&tcp.token_file)?;
    let mut builder = Server::builder().concurrency_limit_per_connection(PER_CONNECTION);
    match &tcp.tls {
        Some((cert, key)) => {
            let read = |path: &Path, what: &str| {
                std::fs::read(path)
                    .with_context(|| format!("reading the {what} {}", path.display()))
            };
            let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
                read(cert, "TLS certificate")?,
                read(key, "TLS key")?,
            ));
            if let Some(ca) = &tcp.client_ca {
                tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
            }
            builder = builder.tls_config(tls).context("daemon.tls_cert and daemon.tls_key")?;
        }
        None => warn!(
            addr = %tcp.listen,
            "the TCP API is PLAINTEXT (daemon.tcp_plaintext = true): anyone on the network path \
             reads the bearer token and can change the filter; serve TLS (tls_cert, tls_key)"
        ),
    }
    let listener = tokio::net::TcpListener::bind(tcp.listen)
        .await
        .with_context(|| format!("listening on {} (daemon.tcp_listen)", tcp.listen))?;
    info!(
        addr = %tcp.listen,
        tls = tcp.tls.is_some(),
        client_certificates = tcp.client_ca.is_some(),
        "listening on TCP (bearer token)"
    );
    let expected = format!("Bearer {token}");
    let auth = move |request: tonic::Request<()>| {
        let given = request.metadata().get("authorization").map(|v| v.as_bytes());
        match given {
            Some(given) if constant_time_eq(given, expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <token>`")),
        }
    };
    let server = builder
        .layer(tonic::service::InterceptorLayer::new(auth))
        .add_routes(routes)
        .serve_with_incoming(TcpListenerStream::new(listener));
    Ok(tokio::spawn(server))
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
fn read_token(path: &Path) -> anyhow::Result<String> {
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
    let token = text.trim_start_matches('\u{feff}').lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        anyhow::bail!("{}: the token is shorter than 16 characters", path.display());
    }
    Ok(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
