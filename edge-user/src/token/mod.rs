//! Admission tokens: edge's own tickets, Queue-it's `queueittoken`, and JWTs (AWS Virtual
//! Waiting Room and other waiting rooms). Each verifier answers one question: did the queue
//! service admit whoever presents this token, until when, and under which id (a token admits at
//! most `admission.max_sources` distinct sources: the daemon counts them per id). Nothing here
//! changes state: the daemon records what a token admitted (daemon/tokens.rs), and
//! `edge token verify` only reports.
//!
//! Refusals carry a short reason (the counter's label) and a detail for a person; neither ever
//! holds the token or a key.
pub mod jwks;
pub mod jwt;
pub mod queueit;

use std::{net::IpAddr, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use self::jwks::KeyStore;
use crate::{
    policy::{AdmissionSettings, JwksSource},
    ticket::{self, Keyring},
};

/// The longest token of any kind looked at; a longer one is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// edge's own ticket (docs/tickets.md).
    Edge,
    Queueit,
    Jwt,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Edge, Kind::Queueit, Kind::Jwt];

    pub fn name(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Queueit => "queueit",
            Self::Jwt => "jwt",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown token kind `{name}` (want edge, queueit or jwt)"))
    }

    /// Every reason a token of this kind can be refused for (the metric's series exist from
    /// the start, at zero).
    pub fn reasons(self) -> &'static [&'static str] {
        match self {
            Self::Edge => {
                &["malformed", "oversized", "unknown_key", "bad_hash", "expired", "wrong_ip"]
            }
            Self::Queueit => &[
                "malformed",
                "oversized",
                "bad_hash",
                "wrong_event",
                "expired",
                "wrong_ip",
                "exp_too_far",
                "no_source",
                "replayed",
                "replay_state_full",
            ],
            Self::Jwt => &[
                "malformed",
                "oversized",
                "alg_none",
                "alg_not_allowed",
                "no_keys",
                "keys_stale",
                "unknown_kid",
                "alg_key_mismatch",
                "bad_signature",
                "missing_claim",
                "expired",
                "exp_too_far",
                "not_yet_valid",
                "wrong_issuer",
                "wrong_audience",
                "claim_mismatch",
                "no_source",
                "replayed",
                "replay_state_full",
            ],
        }
    }

    /// The kind a token's text has: a JWT has three dot-separated parts, a Queue-it token
    /// `~`-separated fields, an edge ticket is 64 characters of URL-safe base64; None for
    /// text that is none of these.
    pub fn detect(token: &str) -> Option<Self> {
        let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            Some(Self::Jwt)
        } else if token.contains('~') || token.starts_with("e_") {
            Some(Self::Queueit)
        } else if token.len() == 64 && token.bytes().all(base64url) {
            Some(Self::Edge)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token admits nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// None when the kind is not known (not configured, or the token was not read at all).
    pub kind: Option<Kind>,
    /// The counter's label: `bad_hash`, `bad_signature`, `expired`, `wrong_audience`, ...
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "{kind} token refused: {}: {}", self.reason, self.detail),
            None => write!(f, "token refused: {}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for Refusal {}

/// A token's id for the replay limit: a hash of its kind and what names it (Queue-it's event
/// and queue id, a JWT's issuer and `jti` or `sub`), so the store keeps no token text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimId(pub [u8; 16]);

/// A token's replay id and until when its uses must be remembered (after that, the token is
/// refused as expired anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: ClaimId,
    pub expires: u64,
}

pub fn claim_id(kind: Kind, parts: &[&str]) -> ClaimId {
    let mut hash = Sha256::new();
    hash.update(kind.name().as_bytes());
    for part in parts {
        // Length-prefixed, so no two lists of parts hash the same bytes.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    ClaimId(hash.finalize()[..16].try_into().expect("16 of 32 bytes"))
}

/// What a valid token admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub kind: Kind,
    /// The address admitted (an IPv6 address stands for its /64).
    pub source: IpAddr,
    /// Admitted until (unix seconds, exclusive).
    pub until: u64,
    /// The longest the token admits, counted from its first use (a token presented again
    /// admits no longer than that): Queue-it's `admit_for_s`, a JWT's `max_admit_s`.
    pub cap_s: Option<u64>,
    /// None for an edge ticket: it names its source, so it cannot be replayed from another.
    pub claim: Option<Claim>,
    /// What the token says, for a person (`edge token verify`): never the token itself.
    pub subject: String,
}

/// Text a token carries, for a refusal's detail or `edge token verify`: control characters
/// escaped (no forged lines in a terminal or a log) and cut to 64 characters.
pub fn shown(text: &str) -> String {
    let mut out = crate::text::printable(text);
    if out.chars().count() > 64 {
        out = out.chars().take(64).collect::<String>() + "...";
    }
    out
}

/// The longest a waiting room's token may still be valid for (a JWT's `exp`, Queue-it's
/// `ts_`): its use must be remembered that long to refuse a replay.
pub const MAX_LIFETIME_S: u64 = 30 * 86_400;

/// The shortest secret accepted: 128 bits (an HMAC key shorter than that can be guessed).
pub const MIN_SECRET_BYTES: usize = 16;

/// Key material: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Reads a file that holds a secret: it must not be readable by group or others. The text's
/// surrounding white space (a trailing newline) is not part of the secret.
pub fn read_secret(path: &Path) -> Result<Secret, String> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{name}: readable by group or others (mode {mode:o}); secrets must be mode 600"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let secret = text.trim();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{name}: {} bytes; a secret is at least {MIN_SECRET_BYTES} (anyone could guess a \
             shorter one and mint tokens)",
            secret.len()
        ));
    }
    Ok(Secret(secret.as_bytes().to_vec()))
}

/// The verifiers configured, one per kind.
#[derive(Clone, Debug, Default)]
pub struct Verifiers {
    pub edge: Option<Keyring>,
    pub queueit: Option<queueit::Verifier>,
    pub jwt: Option<jwt::Verifier>,
}

impl Verifiers {
    /// Verifies `token` as `kind` (detected from its text when None) for `source`, the address
    /// presenting it, at `now` (unix seconds).
    pub fn verify(
        &self,
        kind: Option<Kind>,
        token: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Accepted, Refusal> {
        let token = token.trim();
        // A v4 client seen through a dual-stack socket is its IPv4 address.
        let source = source.map(|ip| ip.to_canonical());
        // Text of no kind's form is a malformed token of the one kind configured, if only one
        // is (a daemon that takes tickets only counts it as a malformed ticket).
        let only = match self.kinds().as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let Some(kind) = kind.or_else(|| Kind::detect(token)).or(only) else {
            let detail = "neither a JWT, a Queue-it token nor an edge ticket".to_string();
            return Err(Refusal { kind: None, reason: "malformed", detail });
        };
        let refuse = |reason, detail: String| Refusal { kind: Some(kind), reason, detail };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse(
                "oversized",
                format!("{} bytes; tokens longer than {MAX_TOKEN_BYTES} are not read", token.len()),
            ));
        }
        let not_configured =
            |table: &str| refuse("not_configured", format!("no {table} table in the config file"));
        match kind {
            Kind::Edge => {
                let ring = self.edge.as_ref().ok_or_else(|| not_configured("admission.keys"))?;
                let verified = ticket::decode(token)
                    .and_then(|t| ticket::verify(&t, ring, now, source))
                    .map_err(|r| refuse(r.reason(), r.to_string()))?;
                Ok(Accepted {
                    kind,
                    source: verified.ip,
                    until: verified.not_after.saturating_add(1),
                    cap_s: None,
                    claim: None,
                    subject: format!("ticket {:016x}, key {}", verified.ticket_id, verified.key_id),
                })
            }
            Kind::Queueit => {
                let v =
                    self.queueit.as_ref().ok_or_else(|| not_configured("[admission.queueit]"))?;
                v.verify(token, source, now)
            }
            Kind::Jwt => {
                let v = self.jwt.as_ref().ok_or_else(|| not_configured("[admission.jwt]"))?;
                v.verify(token, source, now)
            }
        }
    }

    /// The verifiers `settings` configure, with their key files read. Keys fetched from a
    /// JWKS URL start empty: the daemon's fetcher (or `edge token verify`) fills them.
    pub fn from_settings(settings: &AdmissionSettings) -> Result<Self, String> {
        let edge = match &settings.keys {
            Some(path) => Some(Keyring::load(path).map_err(|e| format!("admission.keys: {e}"))?),
            None => None,
        };
        let queueit = match &settings.queueit {
            Some(q) => Some(queueit::Verifier {
                secret: read_secret(&q.secret_file)
                    .map_err(|e| format!("admission.queueit.secret_file: {e}"))?,
                events: q.events.iter().map(|e| e.to_ascii_lowercase()).collect(),
                admit_for_s: u64::from(q.admit_for_s),
            }),
            None => None,
        };
        let jwt = match &settings.jwt {
            Some(j) => {
                let keys = match &j.keys {
                    JwksSource::File(path) => {
                        let set = jwks::load_file(path)
                            .map_err(|e| format!("admission.jwt.jwks_file: {e}"))?;
                        KeyStore::with(set, 0, None)
                    }
                    JwksSource::Url { max_age_s, .. } => KeyStore::new(Some(u64::from(*max_age_s))),
                };
                Some(jwt::Verifier {
                    keys: Arc::new(keys),
                    issuer: j.issuer.clone(),
                    audience: j.audience.clone(),
                    algorithms: j
                        .algorithms
                        .iter()
                        .filter_map(|name| jwks::algorithm_named(name))
                        .collect(),
                    claims: j.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    leeway_s: u64::from(j.leeway_s),
                    max_admit_s: j.max_admit_s.map(u64::from),
                })
            }
            None => None,
        };
        Ok(Self { edge, queueit, jwt })
    }

    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if self.edge.is_some() {
            kinds.push(Kind::Edge);
        }
        if self.queueit.is_some() {
            kinds.push(Kind::Queueit);
        }
        if self.jwt.is_some() {
            kinds.push(Kind::Jwt);
        }
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_detected_from_the_text() {
        assert_eq!(Kind::detect("eyJh.eyJz.c2ln"), Some(Kind::Jwt));
        assert_eq!(Kind::detect("e_sale~q_1~ts_1~h_00"), Some(Kind::Queueit));
        assert_eq!(Kind::detect(&"A".repeat(64)), Some(Kind::Edge));
        assert_eq!(Kind::detect(""), None);
        assert_eq!(Kind::detect("a.b"), None);
        assert_eq!(shown("x\u{1b}[2J"), "x\\u{1b}[2J");
    }

    #[test]
    fn claim_ids_do_not_collide_across_part_boundaries() {
        assert_ne!(claim_id(Kind::Jwt, &["ab", "c"]), claim_id(Kind::Jwt, &["a", "bc"]));
        assert_ne!(claim_id(Kind::Jwt, &["a"]), claim_id(Kind::Queueit, &["a"]));
    }
}
