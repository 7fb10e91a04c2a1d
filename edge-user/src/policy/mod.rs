//! The config file's model: what a validated [`Policy`] holds. Reading a file into one is
//! `parse.rs` (strict: unknown keys are errors, and every error names the file, line, column
//! and field); writing one back is `render.rs`.
mod admission;
mod parse;
mod render;

use std::{fmt, path::PathBuf};

use ipnet::IpNet;

pub use admission::{target_prefix, HttpSettings, JwksSource, JwtSettings, QueueitSettings};
pub use parse::parse_cidr;

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

/// The two lists of prefixes: allow (always passes) and deny (never passes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    /// `allow` or `deny`: how users write it, and its map's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => edge_common::maps::ALLOW,
            Self::Deny => edge_common::maps::DENY,
        }
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

impl fmt::Display for UnknownBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate_pps = {}, burst = {}, global_pps = {}, global_burst = {}, prefix_v4 = {}, \
             prefix_v6 = {}",
            self.rate_pps,
            self.burst,
            self.global_pps,
            self.global_burst,
            self.prefix_v4,
            self.prefix_v6
        )
    }
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

/// `[syn_cookies] mode`: when the program answers SYNs to protected TCP ports itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynCookieMode {
    Off,
    /// Whenever the filter enforces (also the attack phase of `mode = "auto"`).
    Attack,
    /// Whenever the filter runs (monitor too).
    Always,
}

impl SynCookieMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "attack" => Some(Self::Attack),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

impl fmt::Display for SynCookieMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Attack => "attack",
            Self::Always => "always",
        })
    }
}

/// `[syn_cookies]`: SYN cookies answered by the program (docs/syn-cookies.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynCookies {
    pub mode: SynCookieMode,
    /// SYN-ACKs per second the program may send, all sources together: edge never becomes
    /// an amplifier.
    pub reply_pps: u32,
    pub reply_burst: u32,
    /// The MSS our SYN-ACKs announce; unset: the smallest MTU of the daemon's interfaces less
    /// the headers.
    pub mss_v4: Option<u16>,
    pub mss_v6: Option<u16>,
}

impl Default for SynCookies {
    fn default() -> Self {
        Self {
            mode: SynCookieMode::Off,
            reply_pps: 100_000,
            reply_burst: 10_000,
            mss_v4: None,
            mss_v6: None,
        }
    }
}

impl fmt::Display for SynCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mss = |m: Option<u16>| m.map_or("from the MTU".to_string(), |m| m.to_string());
        write!(
            f,
            "mode = \"{}\", reply_pps = {}, reply_burst = {}, mss_v4 = {}, mss_v6 = {}",
            self.mode,
            self.reply_pps,
            self.reply_burst,
            mss(self.mss_v4),
            mss(self.mss_v6)
        )
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

impl fmt::Display for AutoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enter_pps = {}, exit_pps = {}, sustain_s = {}, cool_down_s = {}",
            self.enter_pps, self.exit_pps, self.sustain_s, self.cool_down_s
        )
    }
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
    /// `window.max_jump_days`: the most days one roll may move the window without an
    /// operator's say-so (a clock that jumps further is held: see `daemon/window.rs`).
    pub max_jump_days: u16,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Visitors file, resolved against the policy file's directory.
    pub visitors: Option<PathBuf>,
    /// The `[daemon]` table, for `edge daemon`.
    pub daemon: Option<DaemonSettings>,
    /// The `[admission]` table: tickets from the queue service.
    pub admission: AdmissionSettings,
    /// `[fleet]`: share the state with other edge daemons through Redis (docs/fleet.md).
    pub fleet: Option<Fleet>,
    /// `events.drop_sample`: 1 in this many dropped packets reaches `edge top`; 0 = none.
    pub drop_sample: u32,
    /// `learning.handshakes`: record peers that complete a TCP handshake with a local server
    /// on a protected port as today's visitors (the daemon only).
    pub learn_handshakes: bool,
    /// `[syn_cookies]`.
    pub syn_cookies: SynCookies,
}

/// Default `events.drop_sample`: cheap under any flood (a multiply per drop, a ring write per
/// thousand) and enough samples for `edge top` at a few thousand drops a second.
pub const DEFAULT_DROP_SAMPLE: u32 = 1000;

/// Admission tickets (docs/tickets.md) and waiting rooms' tokens (docs/tokens.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// The key ring file (current and previous key); resolved against the config's directory.
    pub keys: Option<PathBuf>,
    /// UDP port where clients knock with a ticket, verified in the kernel; None = no knock.
    pub knock_port: Option<u16>,
    /// The queue service's Redis Stream of admissions, if the daemon consumes one.
    pub feed: Option<Feed>,
    /// `admission.max_sources`: the distinct sources one waiting-room token may admit.
    pub max_sources: u32,
    pub queueit: Option<QueueitSettings>,
    pub jwt: Option<JwtSettings>,
    /// The endpoint browsers are redirected to with their token.
    pub http: Option<HttpSettings>,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            keys: None,
            knock_port: None,
            feed: None,
            max_sources: 1,
            queueit: None,
            jwt: None,
            http: None,
        }
    }
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

/// `[fleet]`: the Redis the nodes share and how this node takes part (docs/fleet.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// `redis://`, `rediss://` (TLS) or `unix://`, credentials in the URL.
    pub redis_url: String,
    /// This node's name in the fleet (default: the host name).
    pub node: String,
    /// The stream the nodes write their changes to; the other keys are named after it.
    pub stream: String,
    /// The fleet key ring (the ticket key ring's format): every entry carries a MAC under it.
    pub key_file: PathBuf,
    /// Keep this node's mode out of the fleet (a canary): its mode changes are not published
    /// and the others' are not applied.
    pub local_mode: bool,
    /// How often a node offers a snapshot of the fleet's state, after which the stream
    /// before it is trimmed.
    pub snapshot_interval_s: u32,
    /// How long Redis may be unreachable before the node reports the fleet degraded.
    pub degraded_after_s: u32,
    /// How long a node may go without reporting before it no longer holds back the stream's
    /// trim (it then rejoins from the snapshot).
    pub node_timeout_s: u32,
    /// `rediss://` only: the CA to trust instead of the system's, and a client certificate
    /// and key for a Redis that asks for one (PEM files).
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl Fleet {
    /// The URL without its password, for status, logs and `config show`.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(&self.redis_url)
    }
}

/// A URL with its password replaced: the user info's (`user:password@`) and a `pass` or
/// `password` query parameter's (how redis-rs takes one for `unix://`).
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((user_info, host)) if user_info.contains(':') => {
                    let user = user_info.split(':').next().unwrap_or("");
                    format!("{scheme}://{user}:REDACTED@{host}{path}")
                }
                Some((_, host)) => format!("{scheme}://REDACTED@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if ["pass", "password"].contains(&name) => {
                    format!("{name}=REDACTED")
                }
                _ => param.to_string(),
            })
            .collect();
        out = format!("{out}?{}", params.join("&"));
    }
    out
}

/// What a queue-service outage does. There is no fail-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOutage {
    /// Visitors and admitted sources keep passing; unknown sources keep their budget.
    Hold,
    /// As `Hold`, but the global unknown budget rises to this ceiling (packets per second).
    OpenRateLimited { ceiling_pps: u32 },
}

impl fmt::Display for OnOutage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hold => f.write_str("hold"),
            Self::OpenRateLimited { ceiling_pps } => {
                write!(f, "open-rate-limited (ceiling {ceiling_pps} pps)")
            }
        }
    }
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
    /// The API on TCP (`tcp_listen` and its keys), if configured.
    pub tcp: Option<TcpApi>,
    pub xdp_mode: XdpModeSetting,
    /// Prometheus `/metrics` (default 127.0.0.1:9464; `metrics_listen = ""` turns it off).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The API served on TCP: always with a bearer token; over TLS unless plaintext was asked for
/// by name (`tcp_plaintext = true`), since anyone on the path would read the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpApi {
    pub listen: std::net::SocketAddr,
    /// Holds the bearer token clients must send.
    pub token_file: PathBuf,
    /// The server's certificate chain and private key (PEM); `None` is plaintext.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA certificates (PEM) client certificates must chain to; `None` asks for none.
    pub client_ca: Option<PathBuf>,
}

impl DaemonSettings {
    /// The first setting that differs from `other` and that only a restart applies (the
    /// listeners, interfaces and state are set up once).
    pub fn restart_only_change(&self, other: &DaemonSettings) -> Option<&'static str> {
        let fields: [(&'static str, bool); 6] = [
            ("daemon.interfaces", self.interfaces != other.interfaces),
            ("daemon.state_dir", self.state_dir != other.state_dir),
            ("daemon.socket", self.socket != other.socket),
            ("daemon.tcp_listen (and its token and TLS files)", self.tcp != other.tcp),
            ("daemon.xdp_mode", self.xdp_mode != other.xdp_mode),
            ("daemon.metrics_listen", self.metrics_listen != other.metrics_listen),
        ];
        fields.iter().find(|(_, changed)| *changed).map(|(field, _)| *field)
    }
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
/// A week: a daemon down over a long weekend rolls on its own; a clock a month off does not.
pub const DEFAULT_MAX_JUMP_DAYS: u16 = 7;

impl Default for Policy {
    fn default() -> Self {
        Self {
            // Without an explicit mode the filter only observes: turning drops on is a decision.
            mode: Mode::Monitor,
            auto: AutoMode::default(),
            protect: DEFAULT_PROTECT.iter().map(|p| Protected::parse(p).unwrap()).collect(),
            unknown: UnknownBudget::default(),
            window_days: DEFAULT_WINDOW_DAYS,
            max_jump_days: DEFAULT_MAX_JUMP_DAYS,
            allow: Vec::new(),
            deny: Vec::new(),
            visitors: None,
            daemon: None,
            admission: AdmissionSettings::default(),
            fleet: None,
            drop_sample: DEFAULT_DROP_SAMPLE,
            learn_handshakes: false,
            syn_cookies: SynCookies::default(),
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
        // Line 0: the file as a whole (it cannot be read), not a place in it.
        match self.line {
            0 => write!(f, "{}: ", self.file)?,
            line => write!(f, "{}:{line}:{}: ", self.file, self.column)?,
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}
