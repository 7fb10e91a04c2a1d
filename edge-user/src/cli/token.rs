//! `edge token verify`: a token checked by the verifiers a config file sets up, without the
//! daemon. Keys from a `jwks_url` are fetched once (the daemon's cache is used if the fetch
//! fails). Exit 0 only for a token that would admit.
use std::{net::IpAddr, path::Path};

use anyhow::Context as _;
use edge::{
    daemon::jwks_fetch::cache_path,
    policy::JwksSource,
    text::utc,
    token::{jwks, Kind, Verifiers},
    Policy,
};

pub fn verify(
    token: &str,
    config: &Path,
    kind: Option<&str>,
    ip: Option<IpAddr>,
    json: bool,
) -> anyhow::Result<()> {
    let stdin;
    let token = if token == "-" {
        stdin = std::io::read_to_string(std::io::stdin()).context("reading the token")?;
        stdin.as_str()
    } else {
        token
    };
    let policy = Policy::load(config)?;
    let verifiers = Verifiers::from_settings(&policy.admission).map_err(anyhow::Error::msg)?;
    if verifiers.kinds().is_empty() {
        anyhow::bail!(
            "{}: no verifier configured (admission.keys, [admission.queueit], [admission.jwt])",
            config.display()
        );
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    if let (Some(jwt), Some(JwksSource::Url { url, ca_file, .. })) =
        (&verifiers.jwt, policy.admission.jwt.as_ref().map(|j| &j.keys))
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        match runtime.block_on(jwks::fetch(url, ca_file.as_deref())) {
            Ok((set, _)) => jwt.keys.put(set, now),
            Err(e) => {
                let state_dir = policy.daemon.as_ref().map(|d| d.state_dir.clone());
                match state_dir.and_then(|dir| jwks::read_cache(&cache_path(&dir), url)) {
                    Some((set, fetched_at)) => {
                        eprintln!(
                            "edge: fetching {url} failed ({e}); using the daemon's cached keys"
                        );
                        jwt.keys.put(set, fetched_at);
                    }
                    // JWTs are then refused (no_keys); the other kinds are still checked.
                    None => eprintln!("edge: fetching {url} failed ({e}), and no cached key set"),
                }
            }
        }
    }
    let kind = kind.map(Kind::parse).transpose().map_err(anyhow::Error::msg)?;
    match verifiers.verify(kind, token, ip, now) {
        Ok(ok) => {
            if json {
                let answer = serde_json::json!({
                    "admit": true,
                    "kind": ok.kind.name(),
                    "source": ok.source.to_string(),
                    "until": ok.until,
                    "subject": ok.subject,
                });
                outln!("{answer}")?;
            } else {
                let source = match ok.source {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("{}/64", ipnet::Ipv6Net::new(v6, 64)?.trunc().addr()),
                };
                outln!(
                    "valid {} token: admits {source} until {} (unix {}); {}",
                    ok.kind,
                    utc(ok.until),
                    ok.until,
                    ok.subject
                )?;
            }
            Ok(())
        }
        Err(refusal) => {
            if json {
                let answer = serde_json::json!({
                    "admit": false,
                    "kind": refusal.kind.map(Kind::name),
                    "reason": refusal.reason,
                    "detail": refusal.detail,
                });
                outln!("{answer}")?;
            }
            Err(anyhow::Error::new(refusal))
        }
    }
}
