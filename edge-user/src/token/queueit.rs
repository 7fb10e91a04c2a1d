//! Queue-it's `queueittoken`: the token its waiting room appends to the redirect back to the
//! site, as its KnownUser connector SDKs read and check it.
//!
//! ```text
//! e_<event id>~q_<queue id>~ts_<unix seconds>~ce_<bool>~cv_<minutes>~rt_<type>~h_<hex HMAC>
//! ```
//!
//! `h_` is HMAC-SHA256, keyed with the customer's secret (its UTF-8 bytes), over everything
//! before `~h_`, in hex. `ts_` is when the redirect stops being valid; an optional `hip_` binds
//! the token to the client's address (HMAC-SHA256 of the address's text under the same key).
//! The SDKs check the hash, the event id (ignoring case) and `ts_`, in that order; so does this.
use std::net::IpAddr;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::{claim_id, shown, Accepted, Claim, Kind, Refusal, Secret, MAX_LIFETIME_S};

/// The `[admission.queueit]` settings, with the secret read.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub secret: Secret,
    /// Accepted event ids, lower-cased (Queue-it compares them ignoring case).
    pub events: Vec<String>,
    /// How long an accepted token admits its source: `ts_` only bounds the redirect.
    pub admit_for_s: u64,
}

/// The fields of a token, before its hash is checked.
struct Fields<'a> {
    /// Everything the hash covers.
    signed: &'a str,
    hash: &'a str,
    event: &'a str,
    queue_id: &'a str,
    valid_until: u64,
    hashed_ip: Option<&'a str>,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal { kind: Some(Kind::Queueit), reason, detail: detail.into() }
}

fn fields(token: &str) -> Result<Fields<'_>, Refusal> {
    let malformed = |detail: &str| refuse("malformed", detail.to_string());
    let at = token.rfind("~h_").ok_or_else(|| malformed("no `~h_` hash field"))?;
    let (signed, hash) = (&token[..at], &token[at + 3..]);
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the `h_` hash is not 64 hex digits, or is not the last field"));
    }
    let (mut event, mut queue_id, mut valid_until, mut hashed_ip) = (None, None, None, None);
    for field in signed.split('~') {
        let (name, value) =
            field.split_once('_').ok_or_else(|| malformed("a field without `name_value` form"))?;
        let slot = match name {
            "e" => &mut event,
            "q" => &mut queue_id,
            "ts" => &mut valid_until,
            "hip" => &mut hashed_ip,
            "h" => return Err(malformed("two `h_` fields")),
            // ce_, cv_, rt_ and fields added later are covered by the hash and not needed here.
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(malformed(&format!("the `{name}_` field appears twice")));
        }
    }
    let event = event.filter(|e| !e.is_empty()).ok_or_else(|| malformed("no `e_` event id"))?;
    let queue_id =
        queue_id.filter(|q| !q.is_empty()).ok_or_else(|| malformed("no `q_` queue id"))?;
    let valid_until = valid_until
        .ok_or_else(|| malformed("no `ts_` timestamp"))?
        .parse::<u64>()
        .map_err(|_| malformed("the `ts_` timestamp is not unix seconds"))?;
    Ok(Fields { signed, hash, event, queue_id, valid_until, hashed_ip })
}

fn mac(secret: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes a key of any length")
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

impl Verifier {
    pub fn verify(
        &self,
        token: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Accepted, Refusal> {
        let f = fields(token)?;
        let mut hash = mac(&self.secret);
        hash.update(f.signed.as_bytes());
        let given = hex_decode(f.hash).expect("checked hex");
        if hash.verify_slice(&given).is_err() {
            return Err(refuse(
                "bad_hash",
                "the token was not issued with this secret, or was altered",
            ));
        }
        let event = f.event.to_ascii_lowercase();
        if !self.events.contains(&event) {
            let event = shown(f.event);
            return Err(refuse("wrong_event", format!("event `{event}` is not accepted here")));
        }
        if f.valid_until < now {
            return Err(refuse(
                "expired",
                format!("the redirect was valid until {} (now {now}, unix seconds)", f.valid_until),
            ));
        }
        if f.valid_until > now.saturating_add(MAX_LIFETIME_S) {
            return Err(refuse(
                "exp_too_far",
                format!("`ts_` {} is over {MAX_LIFETIME_S} s from now", f.valid_until),
            ));
        }
        let source = source.ok_or_else(|| {
            refuse("no_source", "a Queue-it token admits the address presenting it: none given")
        })?;
        if let Some(hashed_ip) = f.hashed_ip {
            let mut ip = mac(&self.secret);
            ip.update(source.to_string().as_bytes());
            let bound = hex_decode(hashed_ip).is_some_and(|b| ip.verify_slice(&b).is_ok());
            if !bound {
                return Err(refuse(
                    "wrong_ip",
                    format!("the token is bound to another address than {source}"),
                ));
            }
        }
        Ok(Accepted {
            kind: Kind::Queueit,
            source,
            until: now.saturating_add(self.admit_for_s),
            cap_s: Some(self.admit_for_s),
            claim: Some(Claim {
                id: claim_id(Kind::Queueit, &[&event, f.queue_id]),
                // Past `ts_` the token is refused as expired: its uses need not be kept longer.
                expires: f.valid_until.saturating_add(1),
            }),
            subject: format!("event {}, queue id {}", shown(f.event), shown(f.queue_id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier {
            secret: Secret::new(b"4e1deweb-6e5a-4b3f-a3bb-25d0e5a1b2c3".to_vec()),
            events: vec!["sale1".into()],
            admit_for_s: 600,
        }
    }

    fn mint(v: &Verifier, body: &str) -> String {
        let mut m = mac(&v.secret);
        m.update(body.as_bytes());
        let hex: String = m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("{body}~h_{hex}")
    }

    const SOURCE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[test]
    fn a_token_verifies_and_admits_for_the_configured_time() {
        let v = verifier();
        let token = mint(&v, "e_Sale1~q_6cf23f10-aca7~ts_2000~ce_False~rt_Queue");
        let ok = v.verify(&token, SOURCE, 1000).unwrap();
        assert_eq!((ok.until, ok.claim.unwrap().expires), (1600, 2001));
        let refused = |token: &str, now| v.verify(token, SOURCE, now).unwrap_err().reason;
        assert_eq!(refused(&token, 2001), "expired");
        assert_eq!(refused(&token.replace("Sale1", "Sale2"), 1000), "bad_hash");
        assert_eq!(refused(&mint(&v, "e_other~q_x~ts_2000"), 1000), "wrong_event");
        assert_eq!(refused(&mint(&v, "e_sale1~ts_2000"), 1000), "malformed");
        assert_eq!(refused(&format!("{token}~rt_x"), 1000), "malformed");
        assert_eq!(v.verify(&token, None, 1000).unwrap_err().reason, "no_source");
    }

    #[test]
    fn a_hashed_ip_binds_the_token() {
        let v = verifier();
        let mut ip = mac(&v.secret);
        ip.update(b"192.0.2.7");
        let hip: String = ip.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let token = mint(&v, &format!("e_sale1~q_q1~ts_2000~hip_{hip}"));
        assert!(v.verify(&token, SOURCE, 1000).is_ok());
        let other = Some("192.0.2.8".parse().unwrap());
        assert_eq!(v.verify(&token, other, 1000).unwrap_err().reason, "wrong_ip");
    }
}
