//! Connecting to the daemon's API: its Unix socket, or its TCP listener (TLS, or plaintext
//! where the daemon was told to serve it) with a bearer token.
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri},
    Request, Status,
};

/// Where the daemon's API is.
#[derive(Clone, Debug)]
pub enum Target {
    Unix(PathBuf),
    Tcp(TcpTarget),
}

/// The API on TCP: `https://HOST:PORT` (TLS) or `http://HOST:PORT` (plaintext).
#[derive(Clone, Debug)]
pub struct TcpTarget {
    pub url: String,
    /// The file holding the bearer token (its first line).
    pub token_file: PathBuf,
    /// CA certificates (PEM) the daemon's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM), for a daemon that asks for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the daemon's certificate must carry, if not the URL's host.
    pub server_name: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every call (nothing on the Unix socket).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A channel to the daemon with its credentials; what every client of the API takes.
pub type ApiChannel = InterceptedService<Channel, Bearer>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}

/// A socket path is the daemon's Unix socket.
impl From<&Path> for Target {
    fn from(socket: &Path) -> Self {
        Target::Unix(socket.to_path_buf())
    }
}

impl From<&PathBuf> for Target {
    fn from(socket: &PathBuf) -> Self {
        Target::Unix(socket.clone())
    }
}

/// A channel to the daemon at `target` (a [`Target`], or a socket's path). Fails at once if
/// nothing listens there.
pub async fn connect(target: impl Into<Target>) -> Result<ApiChannel, ConnectError> {
    match &target.into() {
        Target::Unix(socket) => {
            Ok(InterceptedService::new(connect_unix(socket).await?, Bearer(None)))
        }
        Target::Tcp(tcp) => connect_tcp(tcp).await,
    }
}

async fn connect_unix(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

async fn connect_tcp(tcp: &TcpTarget) -> Result<ApiChannel, ConnectError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ConnectError::File { path: path.into(), source })
    };
    let token = String::from_utf8_lossy(&read(&tcp.token_file)?)
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let token = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        ConnectError::Config(format!(
            "{}: the token is not printable ASCII",
            tcp.token_file.display()
        ))
    })?;
    let mut endpoint = Endpoint::from_shared(tcp.url.clone())
        .map_err(|e| ConnectError::Config(format!("`{}` is not a URL: {e}", tcp.url)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if tcp.url.starts_with("https://") {
        let ca = tcp.ca_file.as_ref().ok_or_else(|| {
            ConnectError::Config(
                "https:// needs --ca-file (the CA the daemon's certificate chains to)".into(),
            )
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(name) = &tcp.server_name {
            tls = tls.domain_name(name.clone());
        }
        if let Some((cert, key)) = &tcp.client_cert {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    } else if !tcp.url.starts_with("http://") {
        return Err(ConnectError::Config(format!(
            "`{}`: the daemon's TCP API is https://HOST:PORT (or http:// where it serves plaintext)",
            tcp.url
        )));
    }
    let channel = endpoint.connect().await?;
    Ok(InterceptedService::new(channel, Bearer(Some(token))))
}
