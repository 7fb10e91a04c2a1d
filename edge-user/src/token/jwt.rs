//! JWTs from waiting rooms: AWS Virtual Waiting Room's RS256 tokens and the HS256, ES256 and
//! EdDSA tokens of others. The order of checks: size, header (`alg: none` and algorithms the
//! configuration does not allow are refused before any key is looked up), the key the `kid`
//! names, the key's own algorithm against the header's, the signature, and only then the
//! claims (`exp`, `nbf`, `iss`, `aud`, configured ones): nothing a token says is believed
//! before its signature is.
//!
//! The signature is checked with `jsonwebtoken` (ring underneath); the claims are checked here,
//! against the caller's clock, so each refusal has its own reason.
use std::{net::IpAddr, sync::Arc};

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::{
    claim_id,
    jwks::{self, KeyStore},
    shown, Accepted, Claim, Kind, Refusal, MAX_LIFETIME_S,
};

/// The `[admission.jwt]` settings, with the keys.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub keys: Arc<KeyStore>,
    pub issuer: String,
    /// A token's `aud` (a string or a list) must hold one of these.
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Claims that must hold these string values (e.g. `token_use = "access"`).
    pub claims: Vec<(String, String)>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_s: u64,
    /// An admission lasts until the token's `exp`, or this long if that is sooner.
    pub max_admit_s: Option<u64>,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal { kind: Some(Kind::Jwt), reason, detail: detail.into() }
}

fn segment(part: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| refuse("malformed", format!("the {what} is not URL-safe base64")))
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Critical extensions: none is understood, so a token that names one is refused.
    crit: Option<Value>,
}

fn number(claims: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| *n >= 0.0)
            .map(|n| Some(n as u64))
            .ok_or_else(|| refuse("malformed", format!("`{name}` is not a number of seconds"))),
    }
}

/// A claim that names something: a string, or a number (some issuers number their tokens).
fn identifier(claims: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn string<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

impl Verifier {
    pub fn verify(
        &self,
        token: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Accepted, Refusal> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse("malformed", "a JWT has three dot-separated parts"));
        };
        let header: Header = serde_json::from_slice(&segment(header, "header")?)
            .map_err(|e| refuse("malformed", format!("header: {e}")))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(refuse("alg_none", "unsigned tokens (`alg: none`) are never accepted"));
        }
        let algorithm = jwks::algorithm_named(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| {
                refuse(
                    "alg_not_allowed",
                    format!("`alg: {}` is not in admission.jwt.algorithms", shown(&header.alg)),
                )
            })?;
        if header.crit.is_some() {
            return Err(refuse("malformed", "the header names critical extensions (`crit`)"));
        }
        let Some(cached) = self.keys.get() else {
            return Err(refuse("no_keys", "the key set has not been read yet"));
        };
        if !self.keys.fresh(cached.fetched_at, now) {
            return Err(refuse(
                "keys_stale",
                format!(
                    "the key set was last fetched {} s ago, past admission.jwt.jwks_max_age_s",
                    now.saturating_sub(cached.fetched_at)
                ),
            ));
        }
        let Some(entry) = cached.set.find(header.kid.as_deref()) else {
            // A kid the set lacks may be the waiting room's new key: the fetcher looks.
            if header.kid.is_some() {
                self.keys.want_refresh();
            }
            return Err(refuse(
                "unknown_kid",
                match &header.kid {
                    Some(kid) => match cached.set.skipped_why(kid) {
                        Some(why) => {
                            format!("the key with kid `{}` is unusable: {why}", shown(kid))
                        }
                        None => format!("no key with kid `{}` in the key set", shown(kid)),
                    },
                    None => "no `kid`, and the key set holds more than one key".into(),
                },
            ));
        };
        if entry.algorithm != algorithm {
            return Err(refuse(
                "alg_key_mismatch",
                format!("`alg: {}` names another algorithm than the key's", shown(&header.alg)),
            ));
        }
        let signed = &token[..header_len(token) + 1 + payload.len()];
        let valid =
            jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &entry.key, algorithm)
                .unwrap_or(false);
        if !valid {
            return Err(refuse("bad_signature", "the signature does not verify with the key"));
        }
        let claims: Value = serde_json::from_slice(&segment(payload, "payload")?)
            .map_err(|e| refuse("malformed", format!("claims: {e}")))?;
        let Value::Object(claims) = claims else {
            return Err(refuse("malformed", "the claims are not a JSON object"));
        };
        self.check_claims(&claims, signed, source, now)
    }

    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        signed: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Accepted, Refusal> {
        let exp = number(claims, "exp")?.ok_or_else(|| refuse("missing_claim", "no `exp`"))?;
        if exp.saturating_add(self.leeway_s) <= now {
            return Err(refuse("expired", format!("expired at {exp} (now {now}, unix seconds)")));
        }
        if exp > now.saturating_add(MAX_LIFETIME_S) {
            return Err(refuse(
                "exp_too_far",
                format!(
                    "valid until {exp}, over {MAX_LIFETIME_S} s from now: not a waiting room's"
                ),
            ));
        }
        if let Some(nbf) = number(claims, "nbf")? {
            if nbf > now.saturating_add(self.leeway_s) {
                return Err(refuse("not_yet_valid", format!("not before {nbf} (now {now})")));
            }
        }
        match string(claims, "iss") {
            None => return Err(refuse("missing_claim", "no `iss`")),
            Some(iss) if iss != self.issuer => {
                return Err(refuse("wrong_issuer", format!("issued by `{}`", shown(iss))))
            }
            Some(_) => {}
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(refuse("missing_claim", "no `aud`")),
        };
        if !audiences.iter().any(|a| self.audience.iter().any(|want| want == a)) {
            let audiences: Vec<String> = audiences.iter().map(|a| shown(a)).collect();
            return Err(refuse("wrong_audience", format!("for audience {audiences:?}")));
        }
        for (name, want) in &self.claims {
            if string(claims, name) != Some(want.as_str()) {
                return Err(refuse("claim_mismatch", format!("`{}` is not {want:?}", shown(name))));
            }
        }
        let source = source.ok_or_else(|| {
            refuse("no_source", "a JWT admits the address presenting it: none given")
        })?;
        // The replay id: the token's `jti`, else its subject; a token with neither is its own
        // (its signed part: not the signature, which ECDSA lets anyone vary).
        let id = identifier(claims, "jti")
            .map(|j| ("jti", j))
            .or_else(|| identifier(claims, "sub").map(|s| ("sub", s)));
        let subject = match &id {
            Some((name, value)) => format!("issuer {}, {name} {}", self.issuer, shown(value)),
            None => format!("issuer {}, no jti or sub", self.issuer),
        };
        let parts: Vec<&str> = match &id {
            Some((name, value)) => vec![&self.issuer, name, value],
            None => vec![&self.issuer, "signed", signed],
        };
        // Through the leeway: a token accepted within it must admit for that long at least.
        let end = exp.saturating_add(self.leeway_s);
        let until = match self.max_admit_s {
            Some(cap) => end.min(now.saturating_add(cap)),
            None => end,
        };
        Ok(Accepted {
            kind: Kind::Jwt,
            source,
            until,
            cap_s: self.max_admit_s,
            claim: Some(Claim {
                id: claim_id(Kind::Jwt, &parts),
                expires: exp.saturating_add(self.leeway_s).saturating_add(1),
            }),
            subject,
        })
    }
}

fn header_len(token: &str) -> usize {
    token.find('.').expect("three parts checked")
}
