//! `[admission.http]`: the endpoint a waiting room sends an admitted browser to,
//! `GET /admit?target=URL` with its token in the query (`queueittoken` or `token`), a cookie of
//! the same name, or `Authorization: Bearer`. The token is verified for the connection's own
//! source address (never a header's word for it), the source is admitted, and the browser is
//! sent on with `302` to the target, which must start with a configured prefix (no open
//! redirect). Anything else gets `403` with a short reason, and nothing changes.
//!
//! Fail fast: connections past `max_connections` are closed at once, a request gets 5 s to
//! arrive, and admissions wait in a bounded queue that is committed in batches (one store
//! record per batch: `Core::redeem`); a full queue answers `503` at once. The kernel bounds
//! what reaches this port from sources it does not know (its own budget, edge-ebpf).
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{info, warn};

use super::{core::Origin, handle::Handle, tokens::Batch};
use crate::{
    policy::HttpSettings,
    token::{Accepted, Kind, Refusal},
    visitors::admission_key,
};
use edge_common::keys::Addr;

/// Connections one source (an IPv6 /64) may hold at once: the rest of `max_connections` stays
/// for everyone else, whoever the source is (admitted sources bypass the kernel's budget).
const PER_SOURCE: u32 = 16;
/// Admissions waiting to be committed; past this the endpoint answers 503.
const QUEUE: usize = 8_192;
/// Most admissions committed in one record.
const MAX_BATCH: usize = 2_048;
/// Time for a TLS handshake, for a request's head, and for a whole connection.
const HANDSHAKE: Duration = Duration::from_secs(5);
const HEADER_READ: Duration = Duration::from_secs(5);
const CONNECTION: Duration = Duration::from_secs(30);

/// Requests answered since the daemon started, by outcome.
#[derive(Debug, Default)]
pub struct EndpointCounts {
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

impl EndpointCounts {
    fn count(&self, outcome: &'static str) {
        *self.outcomes.lock().expect("endpoint counts").entry(outcome).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.outcomes.lock().expect("endpoint counts").clone()
    }
}

/// The outcomes counted (the metric's `outcome` label).
pub const OUTCOMES: [&str; 6] =
    ["admitted", "refused", "bad_target", "busy", "unavailable", "not_found"];

type Reply = oneshot::Sender<Result<Result<u64, Refusal>, String>>;

/// The endpoint, bound and with its certificate read: errors stop the daemon's start.
pub struct Bound {
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

pub fn bind(settings: &HttpSettings) -> anyhow::Result<Bound> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("listening on {} (admission.http.listen)", settings.listen))?;
    listener.set_nonblocking(true)?;
    Ok(Bound { listener, tls })
}

pub async fn serve(handle: Handle, settings: HttpSettings, bound: Bound) {
    let Bound { listener, tls } = bound;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!("admission endpoint: {e}");
            return;
        }
    };
    info!(
        listen = %settings.listen,
        tls = tls.is_some(),
        targets = settings.targets.len(),
        "admission endpoint listening"
    );
    let (queue, pending) = mpsc::channel::<(Accepted, Reply)>(QUEUE);
    tokio::spawn(commit(handle.clone(), pending));
    let slots = Arc::new(Semaphore::new(settings.max_connections as usize));
    let per_source: Arc<Mutex<HashMap<Addr, u32>>> = Arc::default();
    let settings = Arc::new(settings);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off a little, keep serving.
                warn!("admission endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            handle.endpoint.count("busy");
            drop(stream);
            continue;
        };
        let Some(held) = Held::take(&per_source, admission_key(peer.ip())) else {
            handle.endpoint.count("busy");
            drop(stream);
            continue;
        };
        let (handle, settings, queue, tls) =
            (handle.clone(), settings.clone(), queue.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = (slot, held);
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(move |request| {
                let (handle, settings, queue) = (handle.clone(), settings.clone(), queue.clone());
                async move {
                    Ok::<_, Infallible>(answer(&handle, &settings, &queue, peer, request).await)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ);
            let served = async {
                match tls {
                    Some(tls) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await
                        else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            };
            let _ = tokio::time::timeout(CONNECTION, served).await;
        });
    }
}

/// One connection counted against its source, until it is dropped.
struct Held {
    counts: Arc<Mutex<HashMap<Addr, u32>>>,
    source: Addr,
}

impl Held {
    fn take(counts: &Arc<Mutex<HashMap<Addr, u32>>>, source: Addr) -> Option<Self> {
        let mut held = counts.lock().expect("per-source counts");
        let count = held.entry(source).or_default();
        if *count >= PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Self { counts: counts.clone(), source })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.counts.lock().expect("per-source counts");
        if let Some(count) = held.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("admission.http.tls_cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("admission.http.tls_key {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("admission.http.tls_cert and tls_key do not make a certificate and its key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Commits queued admissions in batches: whatever waits when the core is free goes in one
/// record.
async fn commit(handle: Handle, mut pending: mpsc::Receiver<(Accepted, Reply)>) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (tokens, replies): (Vec<Accepted>, Vec<Reply>) = batch.into_iter().unzip();
        let outcomes = handle
            .with(move |core| core.redeem(&tokens, Batch::EachAlone, None, Origin::Api))
            .await;
        match outcomes {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(status) => {
                // The reason is for the operator (the log), not for whoever asked.
                warn!(
                    "admission endpoint: {} admissions not made: {}",
                    replies.len(),
                    status.message()
                );
                for reply in replies {
                    let _ = reply.send(Err(status.code().to_string()));
                }
            }
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().unwrap());
    headers.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    headers.insert(header::REFERRER_POLICY, "no-referrer".parse().unwrap());
    response
}

async fn answer(
    handle: &Handle,
    settings: &HttpSettings,
    queue: &mpsc::Sender<(Accepted, Reply)>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let counts = &handle.endpoint;
    if request.uri().path() != "/admit" || request.method() != Method::GET {
        counts.count("not_found");
        return text(StatusCode::NOT_FOUND, "not found: the endpoint is GET /admit".into());
    }
    let query = parse_query(request.uri().query().unwrap_or(""));
    let Some(target) = query.get("target").and_then(|t| allowed_target(settings, t)) else {
        counts.count("bad_target");
        return text(
            StatusCode::FORBIDDEN,
            "refused: bad_target: the target is missing or not on admission.http.targets".into(),
        );
    };
    let Some((kind, token)) = presented(&query, &request) else {
        counts.count("refused");
        let refusal = Refusal { kind: None, reason: "no_token", detail: String::new() };
        handle.tokens.count_refused(&refusal);
        return text(StatusCode::FORBIDDEN, "refused: no_token: no token in the request".into());
    };
    // The connection's address: a v4 client on a dual-stack socket is its IPv4 address.
    let source = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let accepted = match handle.tokens.verify(kind, &token, Some(source), handle.clock.now()) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            counts.count("refused");
            return text(StatusCode::FORBIDDEN, format!("refused: {}", refusal.reason));
        }
    };
    let (reply, outcome) = oneshot::channel();
    if queue.try_send((accepted, reply)).is_err() {
        counts.count("busy");
        let mut busy = text(StatusCode::SERVICE_UNAVAILABLE, "busy: retry in a second".into());
        busy.headers_mut().insert(header::RETRY_AFTER, "1".parse().unwrap());
        return busy;
    }
    match outcome.await {
        Ok(Ok(Ok(_until))) => {
            counts.count("admitted");
            let mut found = text(StatusCode::FOUND, "admitted".into());
            match target.parse() {
                Ok(location) => {
                    found.headers_mut().insert(header::LOCATION, location);
                    found
                }
                Err(_) => text(StatusCode::OK, "admitted".into()),
            }
        }
        Ok(Ok(Err(refusal))) => {
            counts.count("refused");
            text(StatusCode::FORBIDDEN, format!("refused: {}", refusal.reason))
        }
        Ok(Err(_)) => {
            counts.count("unavailable");
            let mut down = text(StatusCode::SERVICE_UNAVAILABLE, "unavailable: retry".into());
            down.headers_mut().insert(header::RETRY_AFTER, "1".parse().unwrap());
            down
        }
        Err(_) => {
            counts.count("unavailable");
            text(StatusCode::SERVICE_UNAVAILABLE, "unavailable: the daemon is stopping".into())
        }
    }
}

/// The token a request carries and its kind if the carrier says so: the query's
/// `queueittoken` or `token`, then the same names as cookies, then `Authorization: Bearer`.
fn presented(
    query: &BTreeMap<String, String>,
    request: &Request<Incoming>,
) -> Option<(Option<Kind>, String)> {
    let named = |name: &str, value: String| {
        let kind = (name == "queueittoken").then_some(Kind::Queueit);
        Some((kind, value))
    };
    for name in ["queueittoken", "token"] {
        if let Some(value) = query.get(name).filter(|v| !v.is_empty()) {
            return named(name, value.clone());
        }
    }
    for cookies in request.headers().get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else { continue };
        for cookie in cookies.split(';') {
            let Some((name, value)) = cookie.trim().split_once('=') else { continue };
            if ["queueittoken", "token"].contains(&name) && !value.is_empty() {
                return named(name, percent_decode(value));
            }
        }
    }
    let bearer = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = bearer.strip_prefix("Bearer ").or_else(|| bearer.strip_prefix("bearer "))?;
    Some((None, token.trim().to_string()))
}

/// The query's parameters, form-decoded (`+` is a space); the first of a repeated name.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        out.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    out
}

/// A cookie's value, percent-decoded (a `+` in a cookie is a plus).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The target in the form it is compared and redirected in, if it starts with an allowed
/// prefix. Parsing first means `https://shop.example\@evil.net/` or `/../` tricks are judged
/// as the browser will read them.
pub fn allowed_target(settings: &HttpSettings, target: &str) -> Option<String> {
    let url = reqwest::Url::parse(target).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let normalized = url.to_string();
    settings
        .targets
        .iter()
        .any(|prefix| normalized.starts_with(prefix.as_str()))
        .then_some(normalized)
}

/// `edge status`'s line for the endpoint: empty without one.
pub fn status(settings: Option<&HttpSettings>) -> String {
    match settings {
        Some(s) => {
            let scheme = if s.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}/admit ({} target prefixes)", s.listen, s.targets.len())
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(targets: &[&str]) -> HttpSettings {
        HttpSettings {
            listen: "127.0.0.1:1".parse().unwrap(),
            tls: None,
            targets: targets.iter().map(|t| crate::policy::target_prefix(t).unwrap()).collect(),
            max_connections: 1,
            source_pps: 1,
            source_burst: 1,
            global_pps: 1,
            global_burst: 1,
        }
    }

    #[test]
    fn only_targets_under_a_prefix_are_redirected_to() {
        let s = settings(&["https://shop.example/", "https://tickets.example/booking/"]);
        let ok = |t: &str| allowed_target(&s, t);
        assert_eq!(
            ok("https://shop.example/cart?x=1").as_deref(),
            Some("https://shop.example/cart?x=1")
        );
        assert!(ok("https://SHOP.example/").is_some(), "hosts compare without case");
        assert!(ok("https://tickets.example/booking/42").is_some());
        assert!(ok("https://tickets.example/other").is_none());
        assert!(
            ok("https://tickets.example/booking/../admin").is_none(),
            "dot segments resolved first"
        );
        assert!(ok("https://shop.example.evil.net/").is_none());
        assert!(ok("https://shop.example@evil.net/").is_none());
        assert!(ok("https://evil.net\\@shop.example/").is_none());
        assert!(ok("http://shop.example/").is_none(), "the scheme is part of the prefix");
        assert!(ok("javascript:alert(1)").is_none());
        assert!(ok("//shop.example/").is_none());
    }

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("target=https%3A%2F%2Fa.example%2F&token=a.b.c&token=second&x&y=a+b");
        assert_eq!(q["target"], "https://a.example/");
        assert_eq!(q["y"], "a b");
        assert_eq!(percent_decode("e_sale~q_a%2Bb+c"), "e_sale~q_a+b+c");
        assert_eq!(q["token"], "a.b.c");
        assert_eq!(q["x"], "");
    }
}
