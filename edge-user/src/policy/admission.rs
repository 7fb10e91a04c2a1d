//! The `[admission]` table and its sub-tables: edge tickets, the queue service's feed, the knock,
//! and the verifiers of waiting rooms' own tokens (`[admission.queueit]`, `[admission.jwt]`)
//! with the endpoint browsers are redirected to (`[admission.http]`).
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{
    parse::{Checked, Source, MAX_PPS},
    Feed, OnOutage, Policy,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmission {
    keys: Option<Spanned<String>>,
    knock_port: Option<Spanned<i64>>,
    redis_url: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    outage_grace_s: Option<Spanned<i64>>,
    on_queue_outage: Option<Spanned<String>>,
    outage_ceiling_pps: Option<Spanned<i64>>,
    max_sources: Option<Spanned<i64>>,
    queueit: Option<Spanned<RawQueueit>>,
    jwt: Option<Spanned<RawJwt>>,
    http: Option<Spanned<RawHttp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueueit {
    secret_file: Option<Spanned<String>>,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    admit_for_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    jwks_file: Option<Spanned<String>>,
    jwks_url: Option<Spanned<String>>,
    jwks_ca_file: Option<Spanned<String>>,
    jwks_refresh_s: Option<Spanned<i64>>,
    jwks_max_age_s: Option<Spanned<i64>>,
    issuer: Option<Spanned<String>>,
    audience: Option<Spanned<OneOrMany>>,
    algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    claims: Option<BTreeMap<String, Spanned<String>>>,
    leeway_s: Option<Spanned<i64>>,
    max_admit_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    max_connections: Option<Spanned<i64>>,
    source_pps: Option<Spanned<i64>>,
    source_burst: Option<Spanned<i64>>,
    global_pps: Option<Spanned<i64>>,
    global_burst: Option<Spanned<i64>>,
}

/// `[admission.queueit]`: Queue-it's tokens (token/queueit.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueitSettings {
    /// The customer's secret key (mode 600).
    pub secret_file: PathBuf,
    /// Accepted event ids.
    pub events: Vec<String>,
    /// How long an accepted token admits its source.
    pub admit_for_s: u32,
}

/// Where a JWT verifier's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// Re-read when the file changes.
    File(PathBuf),
    /// Fetched every `refresh_s` (and when a token names an unknown `kid`), cached in the state
    /// directory, and used up to `max_age_s` after the last good fetch: then every JWT is
    /// refused.
    Url { url: String, ca_file: Option<PathBuf>, refresh_s: u32, max_age_s: u32 },
}

/// `[admission.jwt]`: JWTs (token/jwt.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    pub keys: JwksSource,
    pub issuer: String,
    pub audience: Vec<String>,
    /// Names as in a JWT header: RS256, ES256, EdDSA, HS256.
    pub algorithms: Vec<String>,
    /// Claims a token must hold with these values.
    pub claims: BTreeMap<String, String>,
    pub leeway_s: u32,
    pub max_admit_s: Option<u32>,
}

/// `[admission.http]`: the endpoint a waiting room redirects admitted browsers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// HTTPS with this certificate chain and key (PEM); plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// URL prefixes a redirect may go to.
    pub targets: Vec<String>,
    /// Connections served at once; more are closed at once (fail fast).
    pub max_connections: u32,
    /// The kernel's budget for packets to the endpoint's port from sources not otherwise let
    /// through: per source, and for all of them together.
    pub source_pps: u32,
    pub source_burst: u32,
    pub global_pps: u32,
    pub global_burst: u32,
}

/// The span of a table's header, for errors about a key it lacks.
fn header<T>(table: &Spanned<T>) -> std::ops::Range<usize> {
    table.span().start..table.span().start
}

pub(super) fn admission(src: &Source, a: &RawAdmission, policy: &mut Policy) -> Checked<()> {
    if let Some(k) = &a.keys {
        policy.admission.keys = Some(src.path(k, "admission.keys")?);
    }
    if let Some(v) = &a.max_sources {
        policy.admission.max_sources = src.int(v, "admission.max_sources", 1..1_001)? as u32;
    }
    if let Some(q) = &a.queueit {
        policy.admission.queueit = Some(queueit(src, q)?);
    }
    if let Some(j) = &a.jwt {
        policy.admission.jwt = Some(jwt(src, j)?);
    }
    let verifies = a.keys.is_some() || a.queueit.is_some() || a.jwt.is_some();
    if let Some(h) = &a.http {
        if !verifies {
            let reason = "the endpoint verifies tokens: configure `admission.keys`, \
                          [admission.queueit] or [admission.jwt]";
            return Err(src.error(header(h), "admission.http", reason.into()));
        }
        let settings = http(src, h)?;
        let port = settings.listen.port();
        let tcp = edge_common::keys::IPPROTO_TCP;
        if policy.protect.iter().any(|p| p.proto == tcp && (p.ports.0..=p.ports.1).contains(&port))
        {
            let span = h.get_ref().listen.as_ref().map_or(header(h), |l| l.span());
            let reason = format!(
                "port {port} is protected (scope.protect): the endpoint needs a TCP port of its \
                 own, which the kernel gives its own budgets"
            );
            return Err(src.error(span, "admission.http.listen", reason));
        }
        policy.admission.http = Some(settings);
    }
    if let Some(url) = &a.redis_url {
        if !url.get_ref().starts_with("redis://") && !url.get_ref().starts_with("unix://") {
            let reason = format!("`{}` is not a redis:// or unix:// URL", url.get_ref());
            return Err(src.error(url.span(), "admission.redis_url", reason));
        }
        if !verifies {
            let reason = "admissions are verified: set `admission.keys` (edge tickets), \
                          [admission.queueit] or [admission.jwt] too";
            return Err(src.error(url.span(), "admission.redis_url", reason.into()));
        }
        let on_outage = match &a.on_queue_outage {
            None => OnOutage::Hold,
            Some(v) if v.get_ref() == "hold" => OnOutage::Hold,
            Some(v) if v.get_ref() == "open-rate-limited" => {
                let ceiling = a.outage_ceiling_pps.as_ref().ok_or_else(|| {
                    let reason = "open-rate-limited needs `outage_ceiling_pps` (there is no \
                                  unlimited)";
                    src.error(v.span(), "admission.on_queue_outage", reason.into())
                })?;
                let field = "admission.outage_ceiling_pps";
                OnOutage::OpenRateLimited {
                    ceiling_pps: src.int(ceiling, field, 1..MAX_PPS + 1)? as u32,
                }
            }
            Some(v) => {
                let reason = format!("`{}` is not hold or open-rate-limited", v.get_ref());
                return Err(src.error(v.span(), "admission.on_queue_outage", reason));
            }
        };
        policy.admission.feed = Some(Feed {
            redis_url: url.get_ref().clone(),
            stream: a.stream.as_ref().map_or("edge:admissions".into(), |s| s.get_ref().clone()),
            outage_grace_s: match &a.outage_grace_s {
                Some(v) => src.int(v, "admission.outage_grace_s", 1..86_401)? as u32,
                None => 30,
            },
            on_outage,
        });
    } else if let Some(v) = a.on_queue_outage.as_ref().or(a.stream.as_ref()) {
        let reason = "the outage policy and stream need `redis_url`";
        return Err(src.error(v.span(), "admission", reason.into()));
    }
    if let Some(port) = &a.knock_port {
        policy.admission.knock_port =
            Some(src.int(port, "admission.knock_port", 1..65_536)? as u16);
        if a.keys.is_none() {
            let reason = "knocks are verified with keys: set `admission.keys` too";
            return Err(src.error(port.span(), "admission.knock_port", reason.into()));
        }
    }
    Ok(())
}

fn queueit(src: &Source, table: &Spanned<RawQueueit>) -> Checked<QueueitSettings> {
    let q = table.get_ref();
    let missing =
        |field: &str, what: &str| src.error(header(table), field, format!("missing: {what}"));
    let secret = q.secret_file.as_ref().ok_or_else(|| {
        missing("admission.queueit.secret_file", "the file holding the customer's secret key")
    })?;
    let events = q
        .events
        .as_ref()
        .ok_or_else(|| missing("admission.queueit.events", "the event ids accepted"))?;
    if events.get_ref().is_empty() {
        let reason = "no event id: a token is accepted for a listed event only";
        return Err(src.error(events.span(), "admission.queueit.events", reason.into()));
    }
    let mut ids = Vec::new();
    for event in events.get_ref() {
        let id = event.get_ref();
        if id.is_empty() || id.contains(['~', '_']) || id.chars().any(char::is_whitespace) {
            let reason = format!("`{id}` is not an event id (no `~`, `_` or spaces)");
            return Err(src.error(event.span(), "admission.queueit.events", reason));
        }
        ids.push(id.clone());
    }
    Ok(QueueitSettings {
        secret_file: src.path(secret, "admission.queueit.secret_file")?,
        events: ids,
        admit_for_s: match &q.admit_for_s {
            Some(v) => src.int(v, "admission.queueit.admit_for_s", 1..7 * 86_400 + 1)? as u32,
            None => 3_600,
        },
    })
}

fn jwt(src: &Source, table: &Spanned<RawJwt>) -> Checked<JwtSettings> {
    let j = table.get_ref();
    let field = |name: &str| format!("admission.jwt.{name}");
    let keys = match (&j.jwks_file, &j.jwks_url) {
        (Some(file), None) => {
            if let Some(v) = j.jwks_ca_file.as_ref() {
                let reason = "a CA is for jwks_url";
                return Err(src.error(v.span(), &field("jwks_ca_file"), reason.into()));
            }
            JwksSource::File(src.path(file, &field("jwks_file"))?)
        }
        (None, Some(url)) => {
            let text = url.get_ref();
            let parsed = reqwest::Url::parse(text).map_err(|e| {
                src.error(url.span(), &field("jwks_url"), format!("not a URL: {e}"))
            })?;
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let reason = "no user info in the URL (it would be logged and shown)";
                return Err(src.error(url.span(), &field("jwks_url"), reason.into()));
            }
            if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                let reason = "keys are fetched over https:// (http:// only from this host): \
                              whoever can change them in flight could admit anyone";
                return Err(src.error(url.span(), &field("jwks_url"), reason.into()));
            }
            let refresh_s = match &j.jwks_refresh_s {
                Some(v) => src.int(v, &field("jwks_refresh_s"), 10..86_401)? as u32,
                None => 300,
            };
            let max_age_s = match &j.jwks_max_age_s {
                Some(v) => src.int(v, &field("jwks_max_age_s"), 60..30 * 86_400 + 1)? as u32,
                None => 86_400,
            };
            if max_age_s < refresh_s {
                let span = j.jwks_max_age_s.as_ref().map_or(url.span(), |v| v.span());
                let reason = format!("shorter than jwks_refresh_s ({refresh_s})");
                return Err(src.error(span, &field("jwks_max_age_s"), reason));
            }
            JwksSource::Url {
                url: text.clone(),
                ca_file: match &j.jwks_ca_file {
                    Some(v) => Some(src.path(v, &field("jwks_ca_file"))?),
                    None => None,
                },
                refresh_s,
                max_age_s,
            }
        }
        (Some(_), Some(url)) => {
            let reason = "jwks_file or jwks_url, not both";
            return Err(src.error(url.span(), &field("jwks_url"), reason.into()));
        }
        (None, None) => {
            let reason = "missing: jwks_file or jwks_url, where the verification keys are";
            return Err(src.error(header(table), &field("jwks_file"), reason.into()));
        }
    };
    if j.jwks_file.is_some() {
        for (v, name) in
            [(&j.jwks_refresh_s, "jwks_refresh_s"), (&j.jwks_max_age_s, "jwks_max_age_s")]
        {
            if let Some(v) = v {
                let reason = "for jwks_url only: a jwks_file is re-read when it changes";
                return Err(src.error(v.span(), &field(name), reason.into()));
            }
        }
    }
    let issuer = j.issuer.as_ref().ok_or_else(|| {
        let reason = "missing: the `iss` tokens must carry (the waiting room's issuer URL)";
        src.error(header(table), &field("issuer"), reason.into())
    })?;
    if issuer.get_ref().is_empty() {
        return Err(src.error(issuer.span(), &field("issuer"), "empty".into()));
    }
    let audience = j.audience.as_ref().ok_or_else(|| {
        let reason = "missing: the `aud` tokens must carry (AWS: the event id)";
        src.error(header(table), &field("audience"), reason.into())
    })?;
    let audiences = match audience.get_ref() {
        OneOrMany::One(a) => vec![a.clone()],
        OneOrMany::Many(list) => list.clone(),
    };
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(src.error(audience.span(), &field("audience"), "an empty audience".into()));
    }
    let algorithms = j.algorithms.as_ref().ok_or_else(|| {
        let reason = "missing: the algorithms accepted, from RS256, ES256, EdDSA, HS256";
        src.error(header(table), &field("algorithms"), reason.into())
    })?;
    if algorithms.get_ref().is_empty() {
        let reason = "empty: name the algorithms accepted";
        return Err(src.error(algorithms.span(), &field("algorithms"), reason.into()));
    }
    let mut names = Vec::new();
    for alg in algorithms.get_ref() {
        if crate::token::jwks::algorithm_named(alg.get_ref()).is_none() {
            let reason = format!("`{}` is not RS256, ES256, EdDSA or HS256", alg.get_ref());
            return Err(src.error(alg.span(), &field("algorithms"), reason));
        }
        names.push(alg.get_ref().clone());
    }
    let mut claims = BTreeMap::new();
    for (name, value) in j.claims.iter().flatten() {
        if ["exp", "nbf", "iat", "iss", "aud"].contains(&name.as_str()) {
            let reason = format!("`{name}` is checked already; set issuer or audience instead");
            return Err(src.error(value.span(), &field("claims"), reason));
        }
        claims.insert(name.clone(), value.get_ref().clone());
    }
    Ok(JwtSettings {
        keys,
        issuer: issuer.get_ref().clone(),
        audience: audiences,
        algorithms: names,
        claims,
        leeway_s: match &j.leeway_s {
            Some(v) => src.int(v, &field("leeway_s"), 0..301)? as u32,
            None => 30,
        },
        max_admit_s: match &j.max_admit_s {
            Some(v) => Some(src.int(v, &field("max_admit_s"), 1..7 * 86_400 + 1)? as u32),
            None => None,
        },
    })
}

fn http(src: &Source, table: &Spanned<RawHttp>) -> Checked<HttpSettings> {
    let h = table.get_ref();
    let field = |name: &str| format!("admission.http.{name}");
    let listen = h.listen.as_ref().ok_or_else(|| {
        let reason = "missing: the ADDRESS:PORT the endpoint listens on";
        src.error(header(table), &field("listen"), reason.into())
    })?;
    let span = listen.span();
    let listen = src.address(listen, &field("listen"))?;
    if listen.port() == 0 {
        let reason = "port 0 is a random port: the kernel's budgets need the endpoint's own";
        return Err(src.error(span, &field("listen"), reason.into()));
    }
    let tls = match (&h.tls_cert, &h.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some((src.path(cert, &field("tls_cert"))?, src.path(key, &field("tls_key"))?))
        }
        (Some(v), None) | (None, Some(v)) => {
            let reason = "HTTPS needs both tls_cert and tls_key";
            return Err(src.error(v.span(), "admission.http", reason.into()));
        }
    };
    let targets = h.targets.as_ref().ok_or_else(|| {
        let reason = "missing: the URL prefixes an admitted browser may be sent to";
        src.error(header(table), &field("targets"), reason.into())
    })?;
    if targets.get_ref().is_empty() {
        let reason = "empty: without a target no redirect is allowed";
        return Err(src.error(targets.span(), &field("targets"), reason.into()));
    }
    let mut prefixes = Vec::new();
    for target in targets.get_ref() {
        let prefix = target_prefix(target.get_ref())
            .map_err(|r| src.error(target.span(), &field("targets"), r))?;
        prefixes.push(prefix);
    }
    let budget = |v: &Option<Spanned<i64>>, name: &str, default: u32| -> Checked<u32> {
        match v {
            Some(v) => Ok(src.int(v, &field(name), 1..MAX_PPS + 1)? as u32),
            None => Ok(default),
        }
    };
    Ok(HttpSettings {
        listen,
        tls,
        targets: prefixes,
        max_connections: match &h.max_connections {
            Some(v) => src.int(v, &field("max_connections"), 1..1_000_001)? as u32,
            None => 4_096,
        },
        source_pps: budget(&h.source_pps, "source_pps", 20)?,
        source_burst: budget(&h.source_burst, "source_burst", 40)?,
        global_pps: budget(&h.global_pps, "global_pps", 50_000)?,
        global_burst: budget(&h.global_burst, "global_burst", 100_000)?,
    })
}

/// A redirect target prefix, normalized as a URL is (so a target is compared in the same
/// form): http or https, a host, and a path that starts with `/` (so `https://shop.example`
/// cannot be a prefix of `https://shop.example.evil.net/`).
pub fn target_prefix(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}`: a target prefix has no user info and no fragment"));
    }
    let after_host = text.splitn(4, '/').nth(3);
    if after_host.is_none() {
        return Err(format!(
            "`{text}` ends at the host: end it with `/` (or a path) so that no other host \
             matches it"
        ));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use crate::policy::{JwksSource, Policy, PolicyError};

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "edge.toml", std::path::Path::new("/etc/edge"))
    }

    const QUEUEIT: &str = "[admission.queueit]\nsecret_file = \"q.secret\"\nevents = [\"sale\"]\n";

    #[test]
    fn waiting_room_tables_parse_with_their_defaults() {
        let text = format!(
            "{QUEUEIT}[admission.jwt]\njwks_url = \"https://q.example/jwks.json\"\n\
             issuer = \"https://q.example\"\naudience = [\"e1\", \"e2\"]\nalgorithms = [\"RS256\"]\n\
             claims = {{ token_use = \"access\" }}\n\
             [admission.http]\nlisten = \"0.0.0.0:8443\"\ntargets = [\"https://shop.example/\"]\n"
        );
        let p = parse(&text).unwrap();
        let a = &p.admission;
        assert_eq!(a.max_sources, 1);
        let q = a.queueit.as_ref().unwrap();
        assert_eq!((q.secret_file.to_str(), q.admit_for_s), (Some("/etc/edge/q.secret"), 3600));
        let j = a.jwt.as_ref().unwrap();
        assert!(matches!(&j.keys, JwksSource::Url { refresh_s: 300, max_age_s: 86_400, .. }));
        assert_eq!(j.audience, ["e1", "e2"]);
        assert_eq!(j.claims["token_use"], "access");
        let h = a.http.as_ref().unwrap();
        assert_eq!((h.max_connections, h.source_pps, h.tls.is_none()), (4096, 20, true));
    }

    #[test]
    fn each_mistake_is_named_by_line_column_and_field() {
        let at = |text: &str| {
            let e = parse(text).unwrap_err();
            (e.line, e.field, e.reason)
        };
        let (line, field, _) = at("[admission.queueit]\nevents = [\"sale\"]\n");
        assert_eq!((line, field.as_str()), (1, "admission.queueit.secret_file"));
        let (line, field, _) = at(&format!("{QUEUEIT}admit_for_s = 0\n"));
        assert_eq!((line, field.as_str()), (4, "admission.queueit.admit_for_s"));
        let (line, field, _) = at("[admission.queueit]\nsecret_file = \"s\"\nevents = [\"a~b\"]\n");
        assert_eq!((line, field.as_str()), (3, "admission.queueit.events"));
        let jwt = "[admission.jwt]\nissuer = \"i\"\naudience = \"a\"\n";
        let (line, field, reason) =
            at(&format!("{jwt}jwks_url = \"http://q.example/k\"\nalgorithms = [\"RS256\"]\n"));
        assert_eq!((line, field.as_str()), (4, "admission.jwt.jwks_url"));
        assert!(reason.contains("https://"), "{reason}");
        let (line, field, _) =
            at(&format!("{jwt}jwks_file = \"k\"\nalgorithms = [\"RS256\", \"none\"]\n"));
        assert_eq!((line, field.as_str()), (5, "admission.jwt.algorithms"));
        let (_, field, _) =
            at(&format!("{jwt}jwks_file = \"k\"\nalgorithms = [\"RS256\"]\nfoo = 1\n"));
        assert_eq!(field, "admission.jwt.foo");
        let http =
            "[admission.http]\nlisten = \"0.0.0.0:443\"\ntargets = [\"https://a.example/\"]\n";
        let (line, field, reason) = at(&format!("{QUEUEIT}{http}"));
        assert_eq!((line, field.as_str()), (5, "admission.http.listen"));
        assert!(reason.contains("protected"), "{reason}");
        let (_, field, reason) = at(&format!(
            "{QUEUEIT}[admission.http]\nlisten = \"0.0.0.0:8443\"\ntargets = [\"https://a.example\"]\n"
        ));
        assert_eq!(field, "admission.http.targets");
        assert!(reason.contains("ends at the host"), "{reason}");
        let (_, field, _) =
            at("[admission.http]\nlisten = \"0.0.0.0:8443\"\ntargets = [\"https://a.example/\"]\n");
        assert_eq!(field, "admission.http", "an endpoint with nothing to verify");
    }
}
