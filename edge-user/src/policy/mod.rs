//! The policy file: parsed strictly (unknown keys are errors) and validated into a [`Policy`]
//! before anything touches the kernel. Every error names the file, line, column and field.
use std::{
    fmt,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// What the filter does with its verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Off,
    Monitor,
    Enforce,
    /// Monitor until unknown sources flood (the `[auto]` thresholds), then enforce until they
    /// calm down. Only the daemon watches the rate; the kernel runs monitor or enforce.
    Auto,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "monitor" => Some(Self::Monitor),
            "enforce" => Some(Self::Enforce),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub(crate) fn from_kernel(mode: u32) -> Self {
        use edge_common::config::*;
        match mode {
            MODE_OFF => Self::Off,
            MODE_ENFORCE => Self::Enforce,
            _ => Self::Monitor,
        }
    }

    pub(crate) fn to_kernel(self) -> u32 {
        use edge_common::config::*;
        match self {
            Self::Off => MODE_OFF,
            // The daemon resolves `auto` before it writes the kernel; calm is monitor.
            Self::Monitor | Self::Auto => MODE_MONITOR,
            Self::Enforce => MODE_ENFORCE,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
            Self::Auto => "auto",
        })
    }
}

/// A protected destination: a transport protocol and a port range (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected {
    pub proto: u8,
    pub ports: (u16, u16),
}

impl Protected {
    /// Parses `tcp/443`, `udp/8000-8100` or `tcp/*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (proto, ports) =
            s.split_once('/').ok_or_else(|| format!("`{s}` is not PROTO/PORT (e.g. tcp/443)"))?;
        let proto = match proto {
            "tcp" => edge_common::keys::IPPROTO_TCP,
            "udp" => edge_common::keys::IPPROTO_UDP,
            other => return Err(format!("protocol `{other}` is not tcp or udp")),
        };
        let port = |p: &str| {
            p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number in 0..=65535"))
        };
        let ports = match ports {
            "*" => (0, u16::MAX),
            range => match range.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("port range `{range}` is empty"));
                    }
                    (lo, hi)
                }
                None => {
                    let p = port(range)?;
                    (p, p)
                }
            },
        };
        Ok(Self { proto, ports })
    }
}

/// Budgets for sources that are on no list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownBudget {
    /// Packets per second per source (aggregated by the prefixes below); 0 drops all unknown.
    pub rate_pps: u32,
    pub burst: u32,
    /// Packets per second for all unknown sources together.
    pub global_pps: u32,
    pub global_burst: u32,
    /// Sources sharing a bucket: IPv4 prefix length (0..=32) and IPv6 (0..=128).
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Default for UnknownBudget {
    fn default() -> Self {
        Self {
            rate_pps: 50,
            burst: 100,
            global_pps: 20_000,
            global_burst: 2_000,
            prefix_v4: 32,
            prefix_v6: 64,
        }
    }
}

/// `mode = "auto"`: when the daemon switches to enforce and back. Two thresholds and two
/// durations make the hysteresis: a flood must last `sustain_s` above `enter_pps` to switch
/// on, and the rate must stay below `exit_pps` for `cool_down_s` to switch off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoMode {
    /// Unknown-source packets per second (all interfaces, passed or dropped) that mean attack.
    pub enter_pps: u32,
    pub exit_pps: u32,
    pub sustain_s: u32,
    pub cool_down_s: u32,
}

impl Default for AutoMode {
    fn default() -> Self {
        Self { enter_pps: 10_000, exit_pps: 5_000, sustain_s: 10, cool_down_s: 300 }
    }
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub auto: AutoMode,
    pub protect: Vec<Protected>,
    pub unknown: UnknownBudget,
    pub window_days: u16,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Visitors file, resolved against the policy file's directory.
    pub visitors: Option<PathBuf>,
    /// The `[daemon]` table, for `edge daemon`.
    pub daemon: Option<DaemonSettings>,
    /// The `[admission]` table: tickets from the queue service.
    pub admission: Admission,
    /// `events.drop_sample`: 1 in this many dropped packets reaches `edge top`; 0 = none.
    pub drop_sample: u32,
    /// `learning.handshakes`: record peers that complete a TCP handshake with a local server
    /// on a protected port as today's visitors (the daemon only).
    pub learn_handshakes: bool,
}

/// Default `events.drop_sample`: cheap under any flood (a multiply per drop, a ring write per
/// thousand) and enough samples for `edge top` at a few thousand drops a second.
pub const DEFAULT_DROP_SAMPLE: u32 = 1000;

impl Admission {
    /// The key ring, if one is configured.
    pub fn keyring(&self) -> Result<Option<crate::ticket::Keyring>, crate::ticket::KeyError> {
        self.keys.as_deref().map(crate::ticket::Keyring::load).transpose()
    }
}

/// Admission tickets (docs/tickets.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// The key ring file (current and previous key); resolved against the config's directory.
    pub keys: Option<PathBuf>,
    /// UDP port where clients knock with a ticket, verified in the kernel; None = no knock.
    pub knock_port: Option<u16>,
    /// The queue service's Redis Stream of admissions, if the daemon consumes one.
    pub feed: Option<Feed>,
}

/// `admission.redis_url` and friends: the fleet feed and what an outage of it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub redis_url: String,
    pub stream: String,
    /// Seconds the feed may fail before the daemon reports it degraded and applies the policy.
    pub outage_grace_s: u32,
    pub on_outage: OnOutage,
}

/// What a queue-service outage does. There is no fail-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOutage {
    /// Visitors and admitted sources keep passing; unknown sources keep their budget.
    Hold,
    /// As `Hold`, but the global unknown budget rises to this ceiling (packets per second).
    OpenRateLimited { ceiling_pps: u32 },
}

impl Policy {
    /// The policy while the feed is out: under `open-rate-limited`, the global unknown budget
    /// is the ceiling (a tenth of a second of burst), never more.
    pub fn during_outage(&self) -> Policy {
        let mut policy = self.clone();
        if let Some(Feed { on_outage: OnOutage::OpenRateLimited { ceiling_pps }, .. }) =
            &self.admission.feed
        {
            policy.unknown.global_pps = *ceiling_pps;
            policy.unknown.global_burst = (*ceiling_pps / 10).max(1);
        }
        policy
    }
}

/// How `edge daemon` runs: the `[daemon]` table of the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    pub interfaces: Vec<String>,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Holds the bearer token TCP clients must send; required with `tcp_listen`.
    pub token_file: Option<PathBuf>,
    pub xdp_mode: XdpModeSetting,
    /// Prometheus `/metrics` (default 127.0.0.1:9464; `metrics_listen = ""` turns it off).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";

pub const DEFAULT_STATE_DIR: &str = "/var/lib/edge";
pub const DEFAULT_SOCKET: &str = "/run/edge/edge.sock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Native if the driver supports it, generic (skb) otherwise.
    Auto,
    Native,
    Skb,
}

impl XdpModeSetting {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "native" => Some(Self::Native),
            "skb" => Some(Self::Skb),
            _ => None,
        }
    }
}

pub const DEFAULT_PROTECT: [&str; 3] = ["tcp/80", "tcp/443", "udp/443"];
pub const DEFAULT_WINDOW_DAYS: u16 = 21;

impl Default for Policy {
    fn default() -> Self {
        Self {
            // Without an explicit mode the filter only observes: turning drops on is a decision.
            mode: Mode::Monitor,
            auto: AutoMode::default(),
            protect: DEFAULT_PROTECT.iter().map(|p| Protected::parse(p).unwrap()).collect(),
            unknown: UnknownBudget::default(),
            window_days: DEFAULT_WINDOW_DAYS,
            allow: Vec::new(),
            deny: Vec::new(),
            visitors: None,
            daemon: None,
            admission: Admission::default(),
            drop_sample: DEFAULT_DROP_SAMPLE,
            learn_handshakes: false,
        }
    }
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.proto == edge_common::keys::IPPROTO_TCP { "tcp" } else { "udp" };
        match self.ports {
            (0, u16::MAX) => write!(f, "{proto}/*"),
            (lo, hi) if lo == hi => write!(f, "{proto}/{lo}"),
            (lo, hi) => write!(f, "{proto}/{lo}-{hi}"),
        }
    }
}

impl Policy {
    /// The policy in the config file's own schema (what `edge config show` prints); parsing it
    /// back gives the same policy.
    pub fn to_toml(&self) -> String {
        use toml::{Table, Value};
        let strings =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        let mut root = Table::new();
        root.insert("mode".into(), Value::String(self.mode.to_string()));
        let a = &self.auto;
        let mut auto = Table::new();
        for (key, value) in [
            ("enter_pps", a.enter_pps),
            ("exit_pps", a.exit_pps),
            ("sustain_s", a.sustain_s),
            ("cool_down_s", a.cool_down_s),
        ] {
            auto.insert(key.into(), Value::Integer(i64::from(value)));
        }
        root.insert("auto".into(), Value::Table(auto));
        let mut scope = Table::new();
        scope.insert(
            "protect".into(),
            strings(self.protect.iter().map(|p| p.to_string()).collect()),
        );
        root.insert("scope".into(), Value::Table(scope));
        let u = &self.unknown;
        let mut unknown = Table::new();
        for (key, value) in [
            ("rate_pps", u.rate_pps),
            ("burst", u.burst),
            ("global_pps", u.global_pps),
            ("global_burst", u.global_burst),
            ("prefix_v4", u32::from(u.prefix_v4)),
            ("prefix_v6", u32::from(u.prefix_v6)),
        ] {
            unknown.insert(key.into(), Value::Integer(i64::from(value)));
        }
        root.insert("unknown".into(), Value::Table(unknown));
        let mut window = Table::new();
        window.insert("days".into(), Value::Integer(i64::from(self.window_days)));
        root.insert("window".into(), Value::Table(window));
        let mut events = Table::new();
        events.insert("drop_sample".into(), Value::Integer(i64::from(self.drop_sample)));
        root.insert("events".into(), Value::Table(events));
        let mut learning = Table::new();
        learning.insert("handshakes".into(), Value::Boolean(self.learn_handshakes));
        root.insert("learning".into(), Value::Table(learning));
        let mut lists = Table::new();
        lists.insert("allow".into(), strings(self.allow.iter().map(|n| n.to_string()).collect()));
        lists.insert("deny".into(), strings(self.deny.iter().map(|n| n.to_string()).collect()));
        if let Some(v) = &self.visitors {
            lists.insert("visitors".into(), Value::String(v.display().to_string()));
        }
        root.insert("lists".into(), Value::Table(lists));
        let mut admission = Table::new();
        if let Some(k) = &self.admission.keys {
            admission.insert("keys".into(), Value::String(k.display().to_string()));
        }
        if let Some(port) = self.admission.knock_port {
            admission.insert("knock_port".into(), Value::Integer(i64::from(port)));
        }
        if let Some(feed) = &self.admission.feed {
            admission.insert("redis_url".into(), Value::String(feed.redis_url.clone()));
            admission.insert("stream".into(), Value::String(feed.stream.clone()));
            admission
                .insert("outage_grace_s".into(), Value::Integer(i64::from(feed.outage_grace_s)));
            let (name, ceiling) = match feed.on_outage {
                OnOutage::Hold => ("hold", None),
                OnOutage::OpenRateLimited { ceiling_pps } => {
                    ("open-rate-limited", Some(ceiling_pps))
                }
            };
            admission.insert("on_queue_outage".into(), Value::String(name.into()));
            if let Some(c) = ceiling {
                admission.insert("outage_ceiling_pps".into(), Value::Integer(i64::from(c)));
            }
        }
        if !admission.is_empty() {
            root.insert("admission".into(), Value::Table(admission));
        }
        if let Some(d) = &self.daemon {
            let mut daemon = Table::new();
            daemon.insert("interfaces".into(), strings(d.interfaces.clone()));
            daemon.insert("state_dir".into(), Value::String(d.state_dir.display().to_string()));
            daemon.insert("socket".into(), Value::String(d.socket.display().to_string()));
            if let Some(addr) = d.tcp_listen {
                daemon.insert("tcp_listen".into(), Value::String(addr.to_string()));
            }
            if let Some(t) = &d.token_file {
                daemon.insert("token_file".into(), Value::String(t.display().to_string()));
            }
            daemon.insert(
                "xdp_mode".into(),
                Value::String(format!("{:?}", d.xdp_mode).to_lowercase()),
            );
            daemon.insert(
                "metrics_listen".into(),
                Value::String(d.metrics_listen.map_or(String::new(), |a| a.to_string())),
            );
            root.insert("daemon".into(), Value::Table(daemon));
        }
        toml::to_string(&root).expect("a TOML table always renders")
    }
}

/// A policy error: where, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

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
struct RawAdmission {
    keys: Option<Spanned<String>>,
    knock_port: Option<Spanned<i64>>,
    redis_url: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    outage_grace_s: Option<Spanned<i64>>,
    on_queue_outage: Option<Spanned<String>>,
    outage_ceiling_pps: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    state_dir: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    tcp_listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLists {
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
    visitors: Option<Spanned<String>>,
}

/// Most packets per second a budget takes: one token per nanosecond.
const MAX_PPS: i64 = 1_000_000_000;

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Validates policy text. `file` names it in errors; relative paths resolve against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self, PolicyError> {
        let at = |span: Range<usize>, field: &str, reason: String| {
            let (line, column) = line_col(text, span.start);
            PolicyError { file: file.to_string(), line, column, field: field.to_string(), reason }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(span, "", e.message().to_string())
        })?;

        let mut policy = Policy::default();
        if let Some(mode) = raw.mode {
            policy.mode = Mode::parse(mode.get_ref()).ok_or_else(|| {
                at(
                    mode.span(),
                    "mode",
                    format!("`{}` is not off, monitor, enforce or auto", mode.get_ref()),
                )
            })?;
        }
        if let Some(protect) = raw.scope.and_then(|s| s.protect) {
            policy.protect = protect
                .iter()
                .map(|p| {
                    Protected::parse(p.get_ref()).map_err(|r| at(p.span(), "scope.protect", r))
                })
                .collect::<Result<_, _>>()?;
        }

        let int = |v: &Spanned<i64>, field: &str, range: Range<i64>| {
            let n = *v.get_ref();
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(at(
                    v.span(),
                    field,
                    format!("{n} is outside {}..={}", range.start, range.end - 1),
                ))
            }
        };
        if let Some(u) = raw.unknown {
            let b = &mut policy.unknown;
            if let Some(v) = &u.rate_pps {
                b.rate_pps = int(v, "unknown.rate_pps", 0..MAX_PPS + 1)? as u32;
            }
            if let Some(v) = &u.burst {
                b.burst = int(v, "unknown.burst", 1..u32::MAX as i64 + 1)? as u32;
            }
            if let Some(v) = &u.global_pps {
                b.global_pps = int(v, "unknown.global_pps", 0..MAX_PPS + 1)? as u32;
                // The global burst follows the rate unless set: a tenth of a second's worth.
                b.global_burst = (b.global_pps / 10).max(1);
            }
            if let Some(v) = &u.global_burst {
                b.global_burst = int(v, "unknown.global_burst", 1..u32::MAX as i64 + 1)? as u32;
            }
            if let Some(v) = &u.prefix_v4 {
                b.prefix_v4 = int(v, "unknown.prefix_v4", 0..33)? as u8;
            }
            if let Some(v) = &u.prefix_v6 {
                b.prefix_v6 = int(v, "unknown.prefix_v6", 0..129)? as u8;
            }
        }
        if let Some(a) = raw.auto {
            let auto = &mut policy.auto;
            if let Some(v) = &a.enter_pps {
                auto.enter_pps = int(v, "auto.enter_pps", 1..MAX_PPS + 1)? as u32;
                // Leaving follows entering unless set: half of it.
                auto.exit_pps = auto.enter_pps / 2;
            }
            if let Some(v) = &a.exit_pps {
                auto.exit_pps = int(v, "auto.exit_pps", 0..MAX_PPS + 1)? as u32;
                if auto.exit_pps > auto.enter_pps {
                    return Err(at(
                        v.span(),
                        "auto.exit_pps",
                        format!(
                            "{} is above auto.enter_pps ({}): leave below where you enter",
                            auto.exit_pps, auto.enter_pps
                        ),
                    ));
                }
            }
            if let Some(v) = &a.sustain_s {
                auto.sustain_s = int(v, "auto.sustain_s", 1..86_401)? as u32;
            }
            if let Some(v) = &a.cool_down_s {
                auto.cool_down_s = int(v, "auto.cool_down_s", 1..86_401)? as u32;
            }
        }
        if let Some(v) = raw.events.and_then(|e| e.drop_sample) {
            policy.drop_sample = int(&v, "events.drop_sample", 0..u32::MAX as i64 + 1)? as u32;
        }
        if let Some(v) = raw.learning.and_then(|l| l.handshakes) {
            policy.learn_handshakes = *v.get_ref();
            if policy.learn_handshakes && raw.daemon.is_none() {
                return Err(at(
                    v.span(),
                    "learning.handshakes",
                    "learning needs `edge daemon` (a [daemon] table) to record visitors".into(),
                ));
            }
        }
        if let Some(days) = raw.window.and_then(|w| w.days) {
            policy.window_days = int(&days, "window.days", 1..3651)? as u16;
        }
        if let Some(lists) = raw.lists {
            let cidrs = |list: Option<Vec<Spanned<String>>>, field: &str| {
                list.unwrap_or_default()
                    .iter()
                    .map(|c| parse_cidr(c.get_ref()).map_err(|r| at(c.span(), field, r)))
                    .collect::<Result<Vec<_>, _>>()
            };
            policy.allow = cidrs(lists.allow, "lists.allow")?;
            policy.deny = cidrs(lists.deny, "lists.deny")?;
            if let Some(v) = lists.visitors {
                if v.get_ref().is_empty() {
                    return Err(at(v.span(), "lists.visitors", "empty path".into()));
                }
                policy.visitors = Some(base.join(v.get_ref()));
                if raw.daemon.is_some() {
                    return Err(at(
                        v.span(),
                        "lists.visitors",
                        "the daemon keeps visitors in its store: import the file with \
                         `edge visitors import` instead"
                            .into(),
                    ));
                }
            }
        }
        if let Some(a) = raw.admission {
            if let Some(k) = &a.keys {
                if k.get_ref().is_empty() {
                    return Err(at(k.span(), "admission.keys", "empty path".into()));
                }
                policy.admission.keys = Some(base.join(k.get_ref()));
            }
            if let Some(url) = &a.redis_url {
                if !url.get_ref().starts_with("redis://") && !url.get_ref().starts_with("unix://") {
                    return Err(at(
                        url.span(),
                        "admission.redis_url",
                        format!("`{}` is not a redis:// or unix:// URL", url.get_ref()),
                    ));
                }
                if a.keys.is_none() {
                    return Err(at(
                        url.span(),
                        "admission.redis_url",
                        "admissions are verified with keys: set `admission.keys` too".into(),
                    ));
                }
                let on_outage = match a.on_queue_outage.as_ref().map(|v| v.get_ref().as_str()) {
                    None | Some("hold") => OnOutage::Hold,
                    Some("open-rate-limited") => {
                        let ceiling = a.outage_ceiling_pps.as_ref().ok_or_else(|| {
                            at(a.on_queue_outage.as_ref().unwrap().span(), "admission.on_queue_outage",
                               "open-rate-limited needs `outage_ceiling_pps` (there is no unlimited)".into())
                        })?;
                        OnOutage::OpenRateLimited {
                            ceiling_pps: int(
                                ceiling,
                                "admission.outage_ceiling_pps",
                                1..MAX_PPS + 1,
                            )? as u32,
                        }
                    }
                    Some(other) => {
                        let v = a.on_queue_outage.as_ref().unwrap();
                        return Err(at(
                            v.span(),
                            "admission.on_queue_outage",
                            format!("`{other}` is not hold or open-rate-limited"),
                        ));
                    }
                };
                policy.admission.feed = Some(Feed {
                    redis_url: url.get_ref().clone(),
                    stream: a
                        .stream
                        .as_ref()
                        .map_or("edge:admissions".into(), |s| s.get_ref().clone()),
                    outage_grace_s: match &a.outage_grace_s {
                        Some(v) => int(v, "admission.outage_grace_s", 1..86_401)? as u32,
                        None => 30,
                    },
                    on_outage,
                });
            } else if let Some(v) = a.on_queue_outage.as_ref().or(a.stream.as_ref()) {
                return Err(at(
                    v.span(),
                    "admission",
                    "the outage policy and stream need `redis_url`".into(),
                ));
            }
            if let Some(port) = &a.knock_port {
                policy.admission.knock_port =
                    Some(int(port, "admission.knock_port", 1..65_536)? as u16);
                if a.keys.is_none() {
                    return Err(at(
                        port.span(),
                        "admission.knock_port",
                        "knocks are verified with keys: set `admission.keys` too".into(),
                    ));
                }
            }
        }
        if let Some(d) = raw.daemon {
            let path = |v: &Spanned<String>, field: &str| {
                if v.get_ref().is_empty() {
                    Err(at(v.span(), field, "empty path".into()))
                } else {
                    Ok(base.join(v.get_ref()))
                }
            };
            let interfaces = d.interfaces.ok_or_else(|| {
                at(0..0, "daemon.interfaces", "missing: the interfaces to attach to".into())
            })?;
            if interfaces.get_ref().is_empty() {
                return Err(at(interfaces.span(), "daemon.interfaces", "empty list".into()));
            }
            let mut names = Vec::new();
            for name in interfaces.get_ref() {
                let n = name.get_ref();
                if n.is_empty()
                    || n.len() > 15
                    || n.contains('/')
                    || n.contains(char::is_whitespace)
                {
                    return Err(at(
                        name.span(),
                        "daemon.interfaces",
                        format!("`{n}` is not an interface name"),
                    ));
                }
                if names.contains(n) {
                    return Err(at(
                        name.span(),
                        "daemon.interfaces",
                        format!("`{n}` is listed twice"),
                    ));
                }
                names.push(n.clone());
            }
            let tcp_listen = match &d.tcp_listen {
                Some(v) => Some(v.get_ref().parse().map_err(|_| {
                    at(
                        v.span(),
                        "daemon.tcp_listen",
                        format!("`{}` is not ADDRESS:PORT", v.get_ref()),
                    )
                })?),
                None => None,
            };
            let token_file =
                d.token_file.as_ref().map(|v| path(v, "daemon.token_file")).transpose()?;
            if let (Some(listen), None) = (&d.tcp_listen, &token_file) {
                return Err(at(
                    listen.span(),
                    "daemon.tcp_listen",
                    "a TCP listener needs `token_file` (clients must send its bearer token)".into(),
                ));
            }
            let xdp_mode = match &d.xdp_mode {
                Some(v) => XdpModeSetting::parse(v.get_ref()).ok_or_else(|| {
                    at(
                        v.span(),
                        "daemon.xdp_mode",
                        format!("`{}` is not auto, native or skb", v.get_ref()),
                    )
                })?,
                None => XdpModeSetting::Auto,
            };
            let metrics_listen = match &d.metrics_listen {
                Some(v) if v.get_ref().is_empty() => None,
                Some(v) => Some(v.get_ref().parse().map_err(|_| {
                    at(
                        v.span(),
                        "daemon.metrics_listen",
                        format!("`{}` is not ADDRESS:PORT (or \"\" for off)", v.get_ref()),
                    )
                })?),
                None => Some(DEFAULT_METRICS.parse().expect("a valid default")),
            };
            policy.daemon = Some(DaemonSettings {
                interfaces: names,
                state_dir: match &d.state_dir {
                    Some(v) => path(v, "daemon.state_dir")?,
                    None => PathBuf::from(DEFAULT_STATE_DIR),
                },
                socket: match &d.socket {
                    Some(v) => path(v, "daemon.socket")?,
                    None => PathBuf::from(DEFAULT_SOCKET),
                },
                tcp_listen,
                token_file,
                xdp_mode,
                metrics_listen,
            });
        }
        Ok(policy)
    }
}

/// Parses `a.b.c.d/len`, an IPv6 prefix, or a bare address (a host route). Host bits must be
/// zero: `10.0.0.1/8` is almost always a typo for something else.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("`{s}` is not an IP address or CIDR prefix")),
        },
    };
    if net.trunc() != net {
        return Err(format!("`{s}` has host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn daemon_table() {
        let p = parse(
            "[daemon]\ninterfaces = [\"eth0\", \"eth1\"]\nstate_dir = \"state\"\n\
             tcp_listen = \"127.0.0.1:7443\"\ntoken_file = \"/etc/edge/token\"\n",
        )
        .unwrap();
        let d = p.daemon.unwrap();
        assert_eq!(d.interfaces, ["eth0", "eth1"]);
        assert_eq!(d.state_dir, Path::new("/etc/edge/state"));
        assert_eq!(d.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(d.tcp_listen, Some("127.0.0.1:7443".parse().unwrap()));
        assert_eq!(parse("").unwrap().daemon, None);

        let e =
            parse("[daemon]\ninterfaces = [\"eth0\"]\ntcp_listen = \"0.0.0.0:1\"\n").unwrap_err();
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
    fn rendered_toml_parses_back_to_the_same_policy() {
        let p = parse(
            "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\", \"udp/8000-8100\", \"tcp/*\"]\n\
             [unknown]\nrate_pps = 7\nprefix_v4 = 24\n[lists]\nallow = [\"10.0.0.0/8\"]\n\
             deny = [\"2001:db8::/32\"]\n[admission]\nkeys = \"k\"\nknock_port = 7000\n\
             [daemon]\ninterfaces = [\"eth0\"]\nstate_dir = \"/s\"\n",
        )
        .unwrap();
        assert_eq!(parse(&p.to_toml()).unwrap(), p);
        let default = Policy::default();
        assert_eq!(parse(&default.to_toml()).unwrap(), default);
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
    }
}
