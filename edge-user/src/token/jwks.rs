//! JSON Web Key Sets: the keys JWTs are verified with, from a file or fetched from a URL (the
//! daemon's fetcher, daemon/jwks_fetch.rs, refreshes them). A key's type fixes the one
//! algorithm it verifies: an RSA key RS256, a P-256 key ES256, an Ed25519 key EdDSA, a
//! symmetric (`oct`) key HS256. That binding is what stops algorithm confusion: a token that
//! names HS256 cannot be checked against an RSA public key used as an HMAC secret.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey,
};

/// The algorithms edge verifies, by name as in a JWT header and in `admission.jwt.algorithms`.
pub const ALGORITHMS: [(&str, Algorithm); 4] = [
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
];

pub fn algorithm_named(name: &str) -> Option<Algorithm> {
    ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The largest key set read, from a file or a URL.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// One usable key.
pub struct Entry {
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// A parsed key set.
pub struct KeySet {
    pub entries: Vec<Entry>,
    /// Keys in the set edge cannot use (other curves or algorithms, encryption keys, short
    /// RSA keys), by kid, and why.
    pub skipped: Vec<(Option<String>, String)>,
}

/// The shortest keys accepted: an HS256 secret of 256 bits (RFC 7518 §3.2), an RSA modulus
/// of 2048 bits (ring verifies no shorter).
const MIN_HMAC_BYTES: usize = 32;
const MIN_RSA_BITS: usize = 2048;

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> =
            self.entries.iter().map(|e| e.kid.as_deref().unwrap_or("-")).collect();
        write!(f, "KeySet {{ kids: {kids:?}, skipped: {} }}", self.skipped.len())
    }
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Keys edge cannot use are skipped; a set with
    /// none it can use is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("{} bytes; a key set is at most {MAX_JWKS_BYTES}", bytes.len()));
        }
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        // serde's message may quote the document (a secret among it): only where it broke.
        let doc: Document = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a JWKS document ({{\"keys\": [...]}}): broken at line {}, column {}",
                e.line(),
                e.column()
            )
        })?;
        let mut set = KeySet { entries: Vec::new(), skipped: Vec::new() };
        for (index, value) in doc.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_string);
            if value.get("d").is_some() || value.get("p").is_some() {
                return Err(format!(
                    "keys[{index}] holds a private key: a key set must hold public keys only"
                ));
            }
            let mut skip = |why: &str| set.skipped.push((kid.clone(), why.to_string()));
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                skip("not a JWK edge reads");
                continue;
            };
            let Some(algorithm) = algorithm_of(&jwk) else {
                skip("an encryption key, or not RSA/RS256, P-256/ES256, Ed25519/EdDSA, oct/HS256");
                continue;
            };
            // A key whose parameters do not decode is skipped like any unusable one: one bad
            // key must not take the set's good ones down with it.
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                skip("its parameters are not valid base64url");
                continue;
            };
            match &jwk.algorithm {
                AlgorithmParameters::OctetKey(p) => {
                    let bytes = base64_len(&p.value);
                    if bytes < MIN_HMAC_BYTES {
                        return Err(format!(
                            "keys[{index}]: an HS256 key of {bytes} bytes; at least \
                             {MIN_HMAC_BYTES} (a shorter one can be guessed)"
                        ));
                    }
                }
                AlgorithmParameters::RSA(p) if base64_len(&p.n) * 8 < MIN_RSA_BITS => {
                    skip(&format!("an RSA key under {MIN_RSA_BITS} bits"));
                    continue;
                }
                _ => {}
            }
            if let Some(id) = kid.as_deref().filter(|_| set.entries.iter().any(|e| e.kid == kid)) {
                return Err(format!("keys[{index}]: kid {id:?} appears twice"));
            }
            set.entries.push(Entry { kid, algorithm, key });
        }
        if set.entries.is_empty() {
            return Err(format!(
                "no usable key ({} skipped: edge verifies RSA, P-256, Ed25519 and oct keys)",
                set.skipped.len()
            ));
        }
        Ok(set)
    }

    /// Why the key `kid` names was skipped, if the set has one it could not use.
    pub fn skipped_why(&self, kid: &str) -> Option<&str> {
        self.skipped.iter().find(|(k, _)| k.as_deref() == Some(kid)).map(|(_, why)| why.as_str())
    }

    /// The key a token names. A token without `kid` may only use a set of one key.
    pub fn find(&self, kid: Option<&str>) -> Option<&Entry> {
        match kid {
            Some(kid) => self.entries.iter().find(|e| e.kid.as_deref() == Some(kid)),
            None if self.entries.len() == 1 => self.entries.first(),
            None => None,
        }
    }

    /// True if the set holds a symmetric key: its file is then a secret.
    pub fn has_secret(&self) -> bool {
        self.entries.iter().any(|e| e.algorithm == Algorithm::HS256)
    }
}

/// The algorithm a key verifies, or None if edge cannot use it.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        _ => return None,
    };
    // A key that names its algorithm must name this one.
    let named = match jwk.common.key_algorithm {
        None => return Some(algorithm),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(KeyAlgorithm::HS256) => Algorithm::HS256,
        Some(_) => return None,
    };
    (named == algorithm).then_some(algorithm)
}

/// Bytes a base64url text decodes to (without decoding it).
fn base64_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}

/// Reads a key set file. One that holds a symmetric key must be mode 600.
pub fn load_file(path: &Path) -> Result<KeySet, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let set = KeySet::parse(&bytes).map_err(|e| format!("{name}: {e}"))?;
    let mode = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?.permissions().mode();
    if set.has_secret() && mode & 0o077 != 0 {
        return Err(format!(
            "{name}: holds a symmetric (oct) key and is readable by group or others (mode {:o}); \
             secrets must be mode 600",
            mode & 0o777
        ));
    }
    Ok(set)
}

/// The keys in use and when they were read (unix seconds).
#[derive(Clone)]
pub struct Cached {
    pub set: Arc<KeySet>,
    pub fetched_at: u64,
}

/// The verifier's view of its keys, shared with whoever refreshes them.
pub struct KeyStore {
    current: RwLock<Option<Cached>>,
    /// Keys fetched from a URL are used up to this age; past it every JWT is refused (fail
    /// closed). None for a file: its keys hold until the file changes.
    pub max_age_s: Option<u64>,
    /// A token named a key the set lacks: the fetcher looks for a new set now.
    wanted: AtomicBool,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStore {{ max_age_s: {:?} }}", self.max_age_s)
    }
}

impl KeyStore {
    pub fn new(max_age_s: Option<u64>) -> Self {
        Self { current: RwLock::new(None), max_age_s, wanted: AtomicBool::new(false) }
    }

    pub fn with(set: KeySet, fetched_at: u64, max_age_s: Option<u64>) -> Self {
        let store = Self::new(max_age_s);
        store.put(set, fetched_at);
        store
    }

    pub fn put(&self, set: KeySet, fetched_at: u64) {
        *self.current.write().expect("key store lock") =
            Some(Cached { set: Arc::new(set), fetched_at });
    }

    pub fn get(&self) -> Option<Cached> {
        self.current.read().expect("key store lock").clone()
    }

    /// Asks the fetcher for a fresh set (an unknown `kid`); true if nobody asked since it last
    /// looked.
    pub fn want_refresh(&self) -> bool {
        !self.wanted.swap(true, Ordering::Relaxed)
    }

    /// Whether a refresh was asked for, clearing the request.
    pub fn take_refresh(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }

    /// Whether keys read at `fetched_at` may still be used at `now`.
    pub fn fresh(&self, fetched_at: u64, now: u64) -> bool {
        self.max_age_s.is_none_or(|max| now.saturating_sub(fetched_at) <= max)
    }
}

/// How long a fetch may take, connection and body together.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Fetches a key set over HTTPS (trusting `ca_file` instead of the system's roots when set).
/// Returns the set and the document's bytes, for the cache.
pub async fn fetch(url: &str, ca_file: Option<&Path>) -> Result<(KeySet, Vec<u8>), String> {
    let mut client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("edge/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        client = client.tls_built_in_root_certs(false);
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build().map_err(|e| format!("HTTP client: {e}"))?;
    let mut response = client.get(url).send().await.map_err(|e| describe(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the key set is over {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let set = KeySet::parse(&body)?;
    Ok((set, body))
}

/// An HTTP error with its causes (reqwest's own message names only the outermost).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The last good key set fetched from a URL, kept in the state directory so that a restart
/// during an outage of the URL keeps using it (up to its age).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CacheFile {
    pub url: String,
    pub fetched_at: u64,
    pub document: serde_json::Value,
}

pub fn read_cache(path: &Path, url: &str) -> Option<(KeySet, u64)> {
    let bytes = std::fs::read(path).ok()?;
    let cache: CacheFile = serde_json::from_slice(&bytes).ok()?;
    if cache.url != url {
        return None;
    }
    let set = KeySet::parse(&serde_json::to_vec(&cache.document).ok()?).ok()?;
    Some((set, cache.fetched_at))
}

/// Writes the cache whole (temporary file, fsync, rename); mode 600, since a set may hold
/// symmetric keys.
pub fn write_cache(path: &Path, url: &str, fetched_at: u64, document: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let document: serde_json::Value =
        serde_json::from_slice(document).map_err(|e| format!("key set: {e}"))?;
    let bytes = serde_json::to_vec(&CacheFile { url: url.into(), fetched_at, document })
        .map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}
