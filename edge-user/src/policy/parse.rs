//! Reading a config file: strict TOML (unknown keys are errors) into the raw tables below, then
//! each table checked into its part of a [`Policy`]. Every error names the file, line, column
//! and field.
use std::{
    collections::HashSet,
    ops::Range,
    path::{Path, PathBuf},
};

use edge_common::maps::{ALLOW_CAPACITY, DENY_CAPACITY};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{
    admission::{admission, RawAdmission},
    AutoMode, DaemonSettings, Fleet, Mode, Policy, PolicyError, Protected, SynCookieMode,
    SynCookies, TcpApi, UnknownBudget, XdpModeSetting, DEFAULT_METRICS, DEFAULT_SOCKET,
    DEFAULT_STATE_DIR,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    mode: Option<Spanned<String>>,
    auto: Option<RawAuto>,
    scope: Option<RawScope>,
    unknown: Option<RawUnknown>,
    window: Option<RawWindow>,
    lists: Option<RawLists>,
    daemon: Option<RawDaemon>,
    admission: Option<RawAdmission>,
    events: Option<RawEvents>,
    learning: Option<RawLearning>,
    fleet: Option<RawFleet>,
    syn_cookies: Option<RawSynCookies>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSynCookies {
    mode: Option<Spanned<String>>,
    reply_pps: Option<Spanned<i64>>,
    reply_burst: Option<Spanned<i64>>,
    mss_v4: Option<Spanned<i64>>,
    mss_v6: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    redis_url: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    local_mode: Option<Spanned<bool>>,
    snapshot_interval_s: Option<Spanned<i64>>,
    degraded_after_s: Option<Spanned<i64>>,
    node_timeout_s: Option<Spanned<i64>>,
    tls_ca_file: Option<Spanned<String>>,
    tls_client_cert: Option<Spanned<String>>,
    tls_client_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    drop_sample: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLearning {
    handshakes: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    state_dir: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    tcp_listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    tls_client_ca: Option<Spanned<String>>,
    tcp_plaintext: Option<Spanned<bool>>,
    xdp_mode: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    protect: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnknown {
    rate_pps: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    global_pps: Option<Spanned<i64>>,
    global_burst: Option<Spanned<i64>>,
    prefix_v4: Option<Spanned<i64>>,
    prefix_v6: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuto {
    enter_pps: Option<Spanned<i64>>,
    exit_pps: Option<Spanned<i64>>,
    sustain_s: Option<Spanned<i64>>,
    cool_down_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Spanned<i64>>,
    max_jump_days: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLists {
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
    visitors: Option<Spanned<String>>,
}

/// Most packets per second a budget takes: one token per nanosecond.
pub(super) const MAX_PPS: i64 = 1_000_000_000;
const U32_RANGE: Range<i64> = 1..u32::MAX as i64 + 1;

/// The text being read, for errors that point into it.
pub(super) struct Source<'a> {
    text: &'a str,
    file: &'a str,
    /// Where relative paths resolve: the config file's directory.
    base: &'a Path,
}

pub(super) type Checked<T> = Result<T, PolicyError>;

impl Source<'_> {
    pub(super) fn error(&self, span: Range<usize>, field: &str, reason: String) -> PolicyError {
        let (line, column) = line_col(self.text, span.start);
        PolicyError { file: self.file.into(), line, column, field: field.into(), reason }
    }

    /// An integer in `range`.
    pub(super) fn int(&self, v: &Spanned<i64>, field: &str, range: Range<i64>) -> Checked<i64> {
        let n = *v.get_ref();
        if range.contains(&n) {
            return Ok(n);
        }
        let reason = format!("{n} is outside {}..={}", range.start, range.end - 1);
        Err(self.error(v.span(), field, reason))
    }

    /// A non-empty path, resolved against the config file's directory.
    pub(super) fn path(&self, v: &Spanned<String>, field: &str) -> Checked<PathBuf> {
        if v.get_ref().is_empty() {
            return Err(self.error(v.span(), field, "empty path".into()));
        }
        Ok(self.base.join(v.get_ref()))
    }

    pub(super) fn address(
        &self,
        v: &Spanned<String>,
        field: &str,
    ) -> Checked<std::net::SocketAddr> {
        v.get_ref().parse().map_err(|_| {
            self.error(v.span(), field, format!("`{}` is not ADDRESS:PORT", v.get_ref()))
        })
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PolicyError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// Validates a policy file's bytes: UTF-8 first (a byte that is not is named by line and
    /// column), then [`Policy::parse`].
    pub fn from_bytes(bytes: &[u8], file: &str, base: &Path) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix");
            let (line, column) = line_col(valid, valid.len());
            let byte = bytes[e.valid_up_to()];
            let reason = format!("not UTF-8 text (byte 0x{byte:02x}); a config file is UTF-8");
            PolicyError { file: file.into(), line, column, field: String::new(), reason }
        })?;
        Self::parse(text, file, base)
    }

    /// Validates policy text. `file` names it in errors; relative paths resolve against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self, PolicyError> {
        let src = Source { text, file, base };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            src.error(span.clone(), &field_at(text, span.start), e.message().to_string())
        })?;
        let mut policy = Policy::default();
        if let Some(mode) = raw.mode {
            policy.mode = Mode::parse(mode.get_ref()).ok_or_else(|| {
                let reason = format!("`{}` is not off, monitor, enforce or auto", mode.get_ref());
                src.error(mode.span(), "mode", reason)
            })?;
        }
        if let Some(protect) = raw.scope.and_then(|s| s.protect) {
            policy.protect = protect
                .iter()
                .map(|p| {
                    Protected::parse(p.get_ref())
                        .map_err(|r| src.error(p.span(), "scope.protect", r))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(u) = raw.unknown {
            policy.unknown = unknown(&src, &u)?;
        }
        if let Some(a) = raw.auto {
            policy.auto = auto(&src, &a)?;
        }
        if let Some(v) = raw.events.and_then(|e| e.drop_sample) {
            policy.drop_sample = src.int(&v, "events.drop_sample", 0..u32::MAX as i64 + 1)? as u32;
        }
        if let Some(v) = raw.learning.and_then(|l| l.handshakes) {
            policy.learn_handshakes = *v.get_ref();
            if policy.learn_handshakes && raw.daemon.is_none() {
                let reason = "learning needs `edge daemon` (a [daemon] table) to record visitors";
                return Err(src.error(v.span(), "learning.handshakes", reason.into()));
            }
        }
        if let Some(c) = raw.syn_cookies {
            policy.syn_cookies = syn_cookies(&src, &c)?;
            if let (Some(mode), None) = (&c.mode, &raw.daemon) {
                if policy.syn_cookies.mode != SynCookieMode::Off {
                    let reason = "SYN cookies need `edge daemon` (a [daemon] table): it sets up \
                                  the host's sysctls and puts them back";
                    return Err(src.error(mode.span(), "syn_cookies.mode", reason.into()));
                }
            }
        }
        if let Some(w) = raw.window {
            if let Some(days) = &w.days {
                policy.window_days = src.int(days, "window.days", 1..3651)? as u16;
            }
            if let Some(jump) = &w.max_jump_days {
                policy.max_jump_days = src.int(jump, "window.max_jump_days", 1..3651)? as u16;
            }
        }
        if let Some(lists) = raw.lists {
            policy.allow = cidrs(&src, lists.allow, "lists.allow", ALLOW_CAPACITY)?;
            policy.deny = cidrs(&src, lists.deny, "lists.deny", DENY_CAPACITY)?;
            if let Some(v) = lists.visitors {
                policy.visitors = Some(src.path(&v, "lists.visitors")?);
                if raw.daemon.is_some() {
                    let reason = "the daemon keeps visitors in its store: import the file with \
                                  `edge visitors import` instead";
                    return Err(src.error(v.span(), "lists.visitors", reason.into()));
                }
            }
        }
        if let Some(a) = raw.admission {
            admission(&src, &a, &mut policy)?;
        }
        if let Some(f) = raw.fleet {
            if raw.daemon.is_none() {
                let reason = "the fleet is the daemons' (a [daemon] table) to share";
                return Err(src.error(0..0, "fleet", reason.into()));
            }
            let settings = fleet(&src, &f, text)?;
            if policy.admission.keys.as_ref() == Some(&settings.key_file) {
                let span = f.key_file.as_ref().map_or(0..0, |k| k.span());
                let reason = "the ticket key ring: the queue service holds it, and could then \
                              write to the fleet; give the fleet its own (`edge key generate`)";
                return Err(src.error(span, "fleet.key_file", reason.into()));
            }
            policy.fleet = Some(settings);
        }
        if let Some(d) = raw.daemon {
            policy.daemon = Some(daemon(&src, &d)?);
        }
        Ok(policy)
    }
}

fn unknown(src: &Source, u: &RawUnknown) -> Checked<UnknownBudget> {
    let mut b = UnknownBudget::default();
    if let Some(v) = &u.rate_pps {
        b.rate_pps = src.int(v, "unknown.rate_pps", 0..MAX_PPS + 1)? as u32;
    }
    if let Some(v) = &u.burst {
        b.burst = src.int(v, "unknown.burst", U32_RANGE)? as u32;
    }
    if let Some(v) = &u.global_pps {
        b.global_pps = src.int(v, "unknown.global_pps", 0..MAX_PPS + 1)? as u32;
        // The global burst follows the rate unless set: a tenth of a second's worth.
        b.global_burst = (b.global_pps / 10).max(1);
    }
    if let Some(v) = &u.global_burst {
        b.global_burst = src.int(v, "unknown.global_burst", U32_RANGE)? as u32;
    }
    if let Some(v) = &u.prefix_v4 {
        b.prefix_v4 = src.int(v, "unknown.prefix_v4", 0..33)? as u8;
    }
    if let Some(v) = &u.prefix_v6 {
        b.prefix_v6 = src.int(v, "unknown.prefix_v6", 0..129)? as u8;
    }
    Ok(b)
}

fn syn_cookies(src: &Source, c: &RawSynCookies) -> Checked<SynCookies> {
    let mut cookies = SynCookies::default();
    if let Some(mode) = &c.mode {
        cookies.mode = SynCookieMode::parse(mode.get_ref()).ok_or_else(|| {
            let reason = format!("`{}` is not off, attack or always", mode.get_ref());
            src.error(mode.span(), "syn_cookies.mode", reason)
        })?;
    }
    if let Some(v) = &c.reply_pps {
        cookies.reply_pps = src.int(v, "syn_cookies.reply_pps", 0..MAX_PPS + 1)? as u32;
        // The burst follows the rate unless set: a tenth of a second's worth.
        cookies.reply_burst = (cookies.reply_pps / 10).max(1);
    }
    if let Some(v) = &c.reply_burst {
        cookies.reply_burst = src.int(v, "syn_cookies.reply_burst", U32_RANGE)? as u32;
    }
    // RFC 879's smallest datagram (576) less the headers, up to a 9000-byte jumbo frame's.
    if let Some(v) = &c.mss_v4 {
        cookies.mss_v4 = Some(src.int(v, "syn_cookies.mss_v4", 536..8961)? as u16);
    }
    if let Some(v) = &c.mss_v6 {
        cookies.mss_v6 = Some(src.int(v, "syn_cookies.mss_v6", 1220..8941)? as u16);
    }
    Ok(cookies)
}

fn auto(src: &Source, a: &RawAuto) -> Checked<AutoMode> {
    let mut auto = AutoMode::default();
    if let Some(v) = &a.enter_pps {
        auto.enter_pps = src.int(v, "auto.enter_pps", 1..MAX_PPS + 1)? as u32;
        // Leaving follows entering unless set: half of it.
        auto.exit_pps = auto.enter_pps / 2;
    }
    if let Some(v) = &a.exit_pps {
        auto.exit_pps = src.int(v, "auto.exit_pps", 0..MAX_PPS + 1)? as u32;
        if auto.exit_pps > auto.enter_pps {
            let reason = format!(
                "{} is above auto.enter_pps ({}): leave below where you enter",
                auto.exit_pps, auto.enter_pps
            );
            return Err(src.error(v.span(), "auto.exit_pps", reason));
        }
    }
    if let Some(v) = &a.sustain_s {
        auto.sustain_s = src.int(v, "auto.sustain_s", 1..86_401)? as u32;
    }
    if let Some(v) = &a.cool_down_s {
        auto.cool_down_s = src.int(v, "auto.cool_down_s", 1..86_401)? as u32;
    }
    Ok(auto)
}

/// A list's prefixes. Its map holds `capacity` distinct prefixes: the first one past it is
/// named here, so `edge check` refuses what the daemon would. A repeat is the same entry.
fn cidrs(
    src: &Source,
    list: Option<Vec<Spanned<String>>>,
    field: &str,
    capacity: u32,
) -> Checked<Vec<IpNet>> {
    let mut seen = HashSet::new();
    let mut nets = Vec::new();
    for c in list.unwrap_or_default() {
        let net = parse_cidr(c.get_ref()).map_err(|r| src.error(c.span(), field, r))?;
        if !seen.insert(net) {
            continue;
        }
        if seen.len() > capacity as usize {
            let map = &field["lists.".len()..];
            let reason =
                format!("more than {capacity} distinct prefixes: the {map} map holds {capacity}");
            return Err(src.error(c.span(), field, reason));
        }
        nets.push(net);
    }
    Ok(nets)
}

fn fleet(src: &Source, f: &RawFleet, text: &str) -> Checked<Fleet> {
    let table = text.find("[fleet]").map_or(0..0, |at| at..at + "[fleet]".len());
    let url = f.redis_url.as_ref().ok_or_else(|| {
        src.error(table.clone(), "fleet.redis_url", "missing: the Redis the nodes share".into())
    })?;
    if !["redis://", "rediss://", "unix://"].iter().any(|s| url.get_ref().starts_with(s)) {
        let reason = format!(
            "`{}` is not a redis://, rediss:// (TLS) or unix:// URL",
            crate::policy::redact_url(url.get_ref())
        );
        return Err(src.error(url.span(), "fleet.redis_url", reason));
    }
    if let Err(e) = redis::Client::open(url.get_ref().as_str()) {
        let reason = format!("not a Redis URL: {}", e.detail().unwrap_or("unparsable"));
        return Err(src.error(url.span(), "fleet.redis_url", reason));
    }
    let key = f.key_file.as_ref().ok_or_else(|| {
        let reason = "missing: every fleet entry is signed with this key ring                       (`edge key generate --out FILE`)";
        src.error(table.clone(), "fleet.key_file", reason.into())
    })?;
    let node = match &f.node {
        Some(v) => {
            fleet_name(v.get_ref()).map_err(|r| src.error(v.span(), "fleet.node", r))?;
            v.get_ref().clone()
        }
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host = host.trim().to_string();
            fleet_name(&host).map_err(|r| {
                let reason = format!("the host name cannot name this node ({r}); set it");
                src.error(table.clone(), "fleet.node", reason)
            })?;
            host
        }
    };
    let stream = match &f.stream {
        Some(v) => {
            fleet_name(v.get_ref()).map_err(|r| src.error(v.span(), "fleet.stream", r))?;
            v.get_ref().clone()
        }
        None => "edge:fleet".into(),
    };
    Ok(Fleet {
        redis_url: url.get_ref().clone(),
        node,
        stream,
        key_file: src.path(key, "fleet.key_file")?,
        local_mode: f.local_mode.as_ref().is_some_and(|v| *v.get_ref()),
        snapshot_interval_s: match &f.snapshot_interval_s {
            Some(v) => src.int(v, "fleet.snapshot_interval_s", 1..86_401)? as u32,
            None => 60,
        },
        degraded_after_s: match &f.degraded_after_s {
            Some(v) => src.int(v, "fleet.degraded_after_s", 1..3_601)? as u32,
            None => 5,
        },
        node_timeout_s: match &f.node_timeout_s {
            Some(v) => src.int(v, "fleet.node_timeout_s", 10..86_401)? as u32,
            None => 600,
        },
        tls_ca_file: match &f.tls_ca_file {
            Some(v) => Some(src.path(v, "fleet.tls_ca_file")?),
            None => None,
        },
        tls_client: match (&f.tls_client_cert, &f.tls_client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                src.path(cert, "fleet.tls_client_cert")?,
                src.path(key, "fleet.tls_client_key")?,
            )),
            (Some(v), None) | (None, Some(v)) => {
                let reason = "a client certificate needs both tls_client_cert and tls_client_key";
                return Err(src.error(v.span(), "fleet", reason.into()));
            }
        },
    })
}

/// A node or stream name: 1 to 64 of letters, digits and `.:_-`.
fn fleet_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".:_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!("`{name}` is not 1 to 64 of letters, digits and `.:_-`"));
    }
    Ok(())
}

fn daemon(src: &Source, d: &RawDaemon) -> Checked<DaemonSettings> {
    let interfaces = d.interfaces.as_ref().ok_or_else(|| {
        src.error(0..0, "daemon.interfaces", "missing: the interfaces to attach to".into())
    })?;
    if interfaces.get_ref().is_empty() {
        return Err(src.error(interfaces.span(), "daemon.interfaces", "empty list".into()));
    }
    let mut names = Vec::new();
    for name in interfaces.get_ref() {
        let n = name.get_ref();
        if n.is_empty() || n.len() > 15 || n.contains('/') || n.contains(char::is_whitespace) {
            let reason = format!("`{n}` is not an interface name");
            return Err(src.error(name.span(), "daemon.interfaces", reason));
        }
        if names.contains(n) {
            return Err(src.error(
                name.span(),
                "daemon.interfaces",
                format!("`{n}` is listed twice"),
            ));
        }
        names.push(n.clone());
    }
    let xdp_mode = match &d.xdp_mode {
        Some(v) => XdpModeSetting::parse(v.get_ref()).ok_or_else(|| {
            let reason = format!("`{}` is not auto, native or skb", v.get_ref());
            src.error(v.span(), "daemon.xdp_mode", reason)
        })?,
        None => XdpModeSetting::Auto,
    };
    let metrics_listen = match &d.metrics_listen {
        Some(v) if v.get_ref().is_empty() => None,
        Some(v) => Some(v.get_ref().parse().map_err(|_| {
            let reason = format!("`{}` is not ADDRESS:PORT (or \"\" for off)", v.get_ref());
            src.error(v.span(), "daemon.metrics_listen", reason)
        })?),
        None => Some(DEFAULT_METRICS.parse().expect("a valid default")),
    };
    Ok(DaemonSettings {
        interfaces: names,
        state_dir: match &d.state_dir {
            Some(v) => src.path(v, "daemon.state_dir")?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        },
        socket: match &d.socket {
            Some(v) => src.path(v, "daemon.socket")?,
            None => PathBuf::from(DEFAULT_SOCKET),
        },
        tcp: tcp_api(src, d)?,
        xdp_mode,
        metrics_listen,
    })
}

/// The TCP API: TLS with a certificate and key (and client certificates if a CA is given), or
/// plaintext only when asked for by name; a bearer token either way.
fn tcp_api(src: &Source, d: &RawDaemon) -> Checked<Option<TcpApi>> {
    let path =
        |v: &Option<Spanned<String>>, field| v.as_ref().map(|v| src.path(v, field)).transpose();
    let token_file = path(&d.token_file, "daemon.token_file")?;
    let (cert, key) = (path(&d.tls_cert, "daemon.tls_cert")?, path(&d.tls_key, "daemon.tls_key")?);
    let client_ca = path(&d.tls_client_ca, "daemon.tls_client_ca")?;
    let plaintext = d.tcp_plaintext.as_ref().is_some_and(|v| *v.get_ref());
    let Some(listen) = &d.tcp_listen else {
        let stray = [
            (&d.token_file, "daemon.token_file"),
            (&d.tls_cert, "daemon.tls_cert"),
            (&d.tls_key, "daemon.tls_key"),
            (&d.tls_client_ca, "daemon.tls_client_ca"),
        ]
        .into_iter()
        .find_map(|(v, field)| v.as_ref().map(|v| (v.span(), field)));
        let stray =
            stray.or_else(|| d.tcp_plaintext.as_ref().map(|v| (v.span(), "daemon.tcp_plaintext")));
        return match stray {
            Some((span, field)) => {
                Err(src.error(span, field, "only used with `tcp_listen`".into()))
            }
            None => Ok(None),
        };
    };
    let field = "daemon.tcp_listen";
    let addr = src.address(listen, field)?;
    let Some(token_file) = token_file else {
        let reason = "a TCP listener needs `token_file` (clients must send its bearer token)";
        return Err(src.error(listen.span(), field, reason.into()));
    };
    let tls = match (cert, key, plaintext) {
        (Some(cert), Some(key), false) => Some((cert, key)),
        (None, None, true) => None,
        (Some(_), Some(_), true) => {
            let v = d.tcp_plaintext.as_ref().expect("set");
            let reason = "plaintext and a TLS certificate: choose one";
            return Err(src.error(v.span(), "daemon.tcp_plaintext", reason.into()));
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            let reason = "TLS needs both `tls_cert` and `tls_key`";
            return Err(src.error(listen.span(), field, reason.into()));
        }
        (None, None, false) => {
            let reason = "a TCP listener serves TLS (set `tls_cert` and `tls_key`); plaintext, \
                          where anyone on the path reads the bearer token, only with \
                          `tcp_plaintext = true`";
            return Err(src.error(listen.span(), field, reason.into()));
        }
    };
    if let (None, Some(v)) = (&tls, &d.tls_client_ca) {
        let reason = "client certificates need TLS (`tls_cert` and `tls_key`)";
        return Err(src.error(v.span(), "daemon.tls_client_ca", reason.into()));
    }
    Ok(Some(TcpApi { listen: addr, token_file, tls, client_ca }))
}

/// Parses `a.b.c.d/len`, an IPv6 prefix, or a bare address (a host route). Host bits must be
/// zero: `10.0.0.1/8` is almost always a typo for something else.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("`{s}` is not an IP address or CIDR prefix")),
        },
    };
    if net.trunc() != net {
        return Err(format!("`{s}` has host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(canonical(net))
}

/// An IPv4 prefix written as IPv6 (`::ffff:198.18.0.0/111`) as the IPv4 prefix it is
/// (`198.18.0.0/15`): the kernel keys both the same, so the lists, the API's rules and their
/// comparisons must too, or removing one spelling would remove the other's entry.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a length of at most 32"),
            ),
            None => net,
        },
        _ => net,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// The dotted name of the key whose key or value holds byte `offset` (`unknown.rate_pps`), for
/// errors the TOML reader reports by position only (a wrong type, an unknown key).
fn field_at(text: &str, offset: usize) -> String {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else { return String::new() };
    let mut path = Vec::new();
    if find_key(doc.as_table(), offset, &mut path) {
        path.join(".")
    } else {
        String::new()
    }
}

fn find_key(table: &toml_edit::Table, offset: usize, path: &mut Vec<String>) -> bool {
    let holds = |span: Option<Range<usize>>| {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    };
    for (name, item) in table.iter() {
        path.push(name.to_string());
        let found = match item {
            toml_edit::Item::Table(inner) => find_key(inner, offset, path),
            _ => holds(table.key(name).and_then(|k| k.span())) || holds(item.span()),
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OnOutage;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "p.toml", Path::new("/etc/edge"))
    }

    #[test]
    fn the_documented_example_parses() {
        let p = parse(
            r#"
mode = "enforce"
[scope]
protect = ["tcp/80", "tcp/443", "udp/443"]
[unknown]
rate_pps = 50
burst = 100
global_pps = 20000
[window]
days = 21
[lists]
allow = ["198.51.100.0/24", "2001:db8:a::/48"]
deny = ["203.0.113.0/24"]
visitors = "visitors.csv"
"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.protect.len(), 3);
        assert_eq!(p.unknown.global_burst, 2000);
        assert_eq!(p.allow.len(), 2);
        assert_eq!(p.visitors.as_deref(), Some(Path::new("/etc/edge/visitors.csv")));
    }

    #[test]
    fn empty_file_is_the_safe_default() {
        let p = parse("").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.mode, Mode::Monitor);
    }

    #[test]
    fn errors_name_line_column_and_field() {
        let e = parse("mode = \"enforce\"\n[unknown]\nrate_pps = -1\n").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (3, 12, "unknown.rate_pps"));
        assert_eq!(e.to_string(), "p.toml:3:12: unknown.rate_pps: -1 is outside 0..=1000000000");

        let e = parse("[lists]\ndeny = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "lists.deny"));
        assert!(e.reason.contains("host bits"), "{e}");

        let e = parse("[scope]\nprotect = [\"tcp/80\", \"icmp/1\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 22));
        assert!(e.reason.contains("not tcp or udp"));

        let e = parse("mode = \"block\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "mode"));

        let e = parse("[window]\ndayz = 3\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("unknown field `dayz`"), "{e}");

        let e = parse("[window]\ndays = 0\n").unwrap_err();
        assert_eq!(e.field, "window.days");

        let e = parse("mode = \n").unwrap_err();
        assert_eq!(e.line, 1);

        // Errors the TOML reader finds by position still name their field.
        let e = parse("[unknown]\nburst = 5\nrate_pps = \"fifty\"\n").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (3, 12, "unknown.rate_pps"), "{e}");
        assert!(e.reason.contains("invalid type"), "{e}");
        let e = parse("[unknown]\nratepps = 50\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "unknown.ratepps"), "{e}");
        assert!(e.to_string().starts_with("p.toml:2:1: unknown.ratepps: unknown field"), "{e}");
        let e = parse("[daemon]\ninterfaces = \"eth0\"\n").unwrap_err();
        assert_eq!(e.field, "daemon.interfaces", "{e}");
        let e = parse("[window]\nmax_jump_days = 0\n").unwrap_err();
        assert_eq!(e.field, "window.max_jump_days");
        assert_eq!(parse("[window]\nmax_jump_days = 30\n").unwrap().max_jump_days, 30);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_named_where_it_stops_being_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, b"mode = \"enforce\"\n# caf\xe9\n").unwrap();
        let e = Policy::load(&path).unwrap_err();
        assert_eq!((e.line, e.column), (2, 6), "{e}");
        assert!(e.reason.contains("not UTF-8") && e.reason.contains("0xe9"), "{e}");
        // A byte-order mark is not an error.
        std::fs::write(&path, "\u{feff}mode = \"enforce\"\n").unwrap();
        assert_eq!(Policy::load(&path).unwrap().mode, Mode::Enforce);
        let e = Policy::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(!e.to_string().contains(":0:0"), "{e}");
    }

    #[test]
    fn daemon_table() {
        let p = parse(
            "[daemon]\ninterfaces = [\"eth0\", \"eth1\"]\nstate_dir = \"state\"\n\
             tcp_listen = \"127.0.0.1:7443\"\ntoken_file = \"/etc/edge/token\"\n\
             tls_cert = \"api.crt\"\ntls_key = \"api.key\"\n",
        )
        .unwrap();
        let d = p.daemon.unwrap();
        assert_eq!(d.interfaces, ["eth0", "eth1"]);
        assert_eq!(d.state_dir, Path::new("/etc/edge/state"));
        assert_eq!(d.socket, Path::new(DEFAULT_SOCKET));
        let tcp = d.tcp.unwrap();
        assert_eq!(tcp.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(tcp.tls, Some(("/etc/edge/api.crt".into(), "/etc/edge/api.key".into())));
        assert_eq!(parse("").unwrap().daemon, None);

        // The TCP API is TLS unless plaintext is asked for by name.
        let listen =
            "[daemon]\ninterfaces = [\"eth0\"]\ntcp_listen = \"0.0.0.0:1\"\ntoken_file = \"t\"\n";
        let e = parse(listen).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "daemon.tcp_listen"));
        assert!(e.reason.contains("tls_cert") && e.reason.contains("tcp_plaintext"), "{e}");
        let plain = parse(&format!("{listen}tcp_plaintext = true\n")).unwrap();
        assert_eq!(plain.daemon.unwrap().tcp.unwrap().tls, None);
        let e = parse(&format!("{listen}tls_cert = \"c\"\n")).unwrap_err();
        assert!(e.reason.contains("both"), "{e}");
        let e =
            parse(&format!("{listen}tcp_plaintext = true\ntls_client_ca = \"ca\"\n")).unwrap_err();
        assert_eq!(e.field, "daemon.tls_client_ca");
        let e = parse("[daemon]\ninterfaces = [\"eth0\"]\ntls_cert = \"c\"\n").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("daemon.tls_cert", "only used with `tcp_listen`")
        );

        let e = parse(
            "[daemon]\ninterfaces = [\"eth0\"]\ntcp_listen = \"0.0.0.0:1\"\ntcp_plaintext = true\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "daemon.tcp_listen"));
        assert!(e.reason.contains("token_file"), "{e}");
        let e = parse("[daemon]\ninterfaces = [\"eth0\", \"eth0\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 23));
        assert!(e.reason.contains("twice"));
        let e = parse("[daemon]\ninterfaces = []\n").unwrap_err();
        assert_eq!(e.field, "daemon.interfaces");
        let e = parse("[daemon]\nstate_dir = \"/x\"\n").unwrap_err();
        assert!(e.reason.contains("missing"), "{e}");
        let e = parse("[daemon]\ninterfaces = [\"a/b\"]\n").unwrap_err();
        assert!(e.reason.contains("not an interface name"), "{e}");
        let e = parse("[lists]\nvisitors = \"v.csv\"\n[daemon]\ninterfaces = [\"eth0\"]\n")
            .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "lists.visitors"));
        let e = parse("[daemon]\ninterfaces = [\"eth0\"]\nxdp_mode = \"fast\"\n").unwrap_err();
        assert_eq!(e.field, "daemon.xdp_mode");
        let feed = "[admission]\nkeys = \"k\"\nredis_url = \"redis://127.0.0.1:6379\"\n";
        let p = parse(&format!(
            "{feed}on_queue_outage = \"open-rate-limited\"\noutage_ceiling_pps = 500\n"
        ))
        .unwrap();
        assert_eq!(parse(&p.to_toml()).unwrap(), p);
        let out = p.during_outage();
        assert_eq!((out.unknown.global_pps, out.unknown.global_burst), (500, 50));
        let hold = parse(feed).unwrap();
        assert_eq!(
            hold.admission.feed.as_ref().unwrap().on_outage,
            OnOutage::Hold,
            "hold is the default"
        );
        assert_eq!(hold.during_outage(), hold, "hold changes nothing");
        let e = parse(&format!("{feed}on_queue_outage = \"open-rate-limited\"\n")).unwrap_err();
        assert!(e.reason.contains("outage_ceiling_pps"), "{e}");
        let e = parse(&format!("{feed}on_queue_outage = \"open\"\n")).unwrap_err();
        assert!(e.reason.contains("not hold or open-rate-limited"), "{e}");
        let e = parse("[admission]\nredis_url = \"redis://x\"\n").unwrap_err();
        assert!(e.reason.contains("keys"), "{e}");

        let e = parse("[admission]\nknock_port = 7000\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "admission.knock_port"));
        let e = parse("[admission]\nkeys = \"k\"\nknock_port = 0\n").unwrap_err();
        assert!(e.reason.contains("outside 1..=65535"), "{e}");
        let e = parse("[daemon]\ninterfaces = [\"eth0\"]\nsocket_path = \"x\"\n").unwrap_err();
        assert!(e.reason.contains("unknown field"), "{e}");
    }

    #[test]
    fn auto_mode_thresholds() {
        let p = parse("mode = \"auto\"\n[auto]\nenter_pps = 800\nsustain_s = 5\n").unwrap();
        assert_eq!(p.mode, Mode::Auto);
        // exit follows enter (half) unless set; the rest keep their defaults.
        assert_eq!(
            p.auto,
            AutoMode { enter_pps: 800, exit_pps: 400, sustain_s: 5, cool_down_s: 300 }
        );
        assert_eq!(parse(&p.to_toml()).unwrap(), p);
        let e = parse("[auto]\nenter_pps = 100\nexit_pps = 200\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "auto.exit_pps"));
        assert!(e.reason.contains("above auto.enter_pps"), "{e}");
        let e = parse("[auto]\nsustain_s = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "auto.sustain_s"));
        let e = parse("[auto]\ncooldown = 5\n").unwrap_err();
        assert!(e.reason.contains("unknown field"), "{e}");
    }

    #[test]
    fn lists_past_their_maps_capacity_are_refused_where_they_overflow() {
        let entries = |n: u32| {
            (0..n)
                .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x0a00_0000 + i)))
                .collect::<Vec<_>>()
        };
        let full = entries(edge_common::maps::ALLOW_CAPACITY);
        let ok = format!("[lists]\nallow = [\n{}\n]\n", full.join(",\n"));
        assert_eq!(parse(&ok).unwrap().allow.len(), full.len());
        let over = entries(70_000);
        let e = parse(&format!("[lists]\nallow = [\n{}\n]\n", over.join(",\n"))).unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (3 + 65_536, 1, "lists.allow"));
        assert!(e.reason.contains("65536"), "{e}");
        // Repeats of one prefix are one entry.
        let repeated = vec!["\"10.0.0.0/8\""; 70_000].join(",");
        assert_eq!(parse(&format!("[lists]\ndeny = [{repeated}]\n")).unwrap().deny.len(), 1);
    }

    #[test]
    fn protected_forms() {
        assert_eq!(Protected::parse("udp/8000-8100").unwrap().ports, (8000, 8100));
        assert_eq!(Protected::parse("tcp/*").unwrap().ports, (0, 65535));
        assert!(Protected::parse("tcp/70000").is_err());
        assert!(Protected::parse("tcp/90-80").is_err());
        assert!(Protected::parse("tcp").is_err());
    }

    #[test]
    fn bare_addresses_are_host_prefixes() {
        assert_eq!(parse_cidr("192.0.2.7").unwrap().prefix_len(), 32);
        assert_eq!(parse_cidr("2001:db8::1").unwrap().prefix_len(), 128);
        assert!(parse_cidr("192.0.2.0/33").is_err());
        assert!(parse_cidr("bogus").is_err());
        // IPv4 written as IPv6 is IPv4: one spelling per kernel entry.
        assert_eq!(
            parse_cidr("::ffff:198.18.0.0/111").unwrap(),
            parse_cidr("198.18.0.0/15").unwrap()
        );
        assert_eq!(parse_cidr("::ffff:192.0.2.7").unwrap(), parse_cidr("192.0.2.7").unwrap());
        assert_eq!(parse_cidr("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_cidr("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn a_fleet_table_is_checked_field_by_field() {
        let daemon = "[daemon]\ninterfaces = [\"eth0\"]\n";
        let fleet = |lines: &str| parse(&format!("[fleet]\n{lines}\n{daemon}"));
        let ok = fleet("redis_url = \"rediss://edge:s3cret@redis:6380/0\"\nkey_file = \"fleet.keys\"\nnode = \"edge-1\"")
            .unwrap();
        let f = ok.fleet.as_ref().unwrap();
        assert_eq!((f.node.as_str(), f.stream.as_str()), ("edge-1", "edge:fleet"));
        assert_eq!(f.key_file, Path::new("/etc/edge/fleet.keys"));
        assert_eq!(f.redis_url_redacted(), "rediss://edge:REDACTED@redis:6380/0");
        assert!(!f.local_mode);
        for (lines, field, at, reason) in [
            ("key_file = \"k\"", "fleet.redis_url", (1, 1), "missing"),
            (
                "redis_url = \"http://x\"\nkey_file = \"k\"",
                "fleet.redis_url",
                (2, 13),
                "not a redis://",
            ),
            ("redis_url = \"redis://x\"", "fleet.key_file", (1, 1), "missing"),
            (
                "redis_url = \"redis://x\"\nkey_file = \"k\"\nnode = \"a b\"",
                "fleet.node",
                (4, 8),
                "letters",
            ),
            (
                "redis_url = \"redis://x\"\nkey_file = \"k\"\nstream = \"\"",
                "fleet.stream",
                (4, 10),
                "1 to 64",
            ),
            (
                "redis_url = \"redis://x\"\nkey_file = \"k\"\nsnapshot_interval_s = 0",
                "fleet.snapshot_interval_s",
                (4, 23),
                "outside",
            ),
            (
                "redis_url = \"redis://x\"\nkey_file = \"k\"\nsentinel = true",
                "fleet.sentinel",
                (4, 1),
                "unknown field",
            ),
        ] {
            let e = fleet(lines).unwrap_err();
            assert_eq!((e.field.as_str(), (e.line, e.column)), (field, at), "{lines}: {e}");
            assert!(e.reason.contains(reason), "{lines}: {e}");
        }
        // A password never reaches an error, nor `config show`.
        let e = fleet("redis_url = \"http://u:hunter2@x\"\nkey_file = \"k\"").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let unix =
            fleet("redis_url = \"unix:///run/redis.sock?db=1&pass=hunter2\"\nkey_file = \"k\"");
        let shown = unix.unwrap().fleet.unwrap().redis_url_redacted();
        assert_eq!(shown, "unix:///run/redis.sock?db=1&pass=REDACTED");
        // The fleet's key is its own, never the ticket key ring the queue service holds.
        let e = parse(&format!(
            "[admission]\nkeys = \"t.keys\"\n[fleet]\nredis_url = \"redis://x\"\nkey_file = \"t.keys\"\n{daemon}"
        ))
        .unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("fleet.key_file", 5), "{e}");
        // Without a daemon there is nothing to share.
        let e = parse("[fleet]\nredis_url = \"redis://x\"\nkey_file = \"k\"\n").unwrap_err();
        assert_eq!(e.field, "fleet");
    }
}
