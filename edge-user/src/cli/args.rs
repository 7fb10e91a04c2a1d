//! The command line: every command, subcommand and option, as clap reads them (and as the man
//! pages and completions show them).
use std::path::PathBuf;

use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "edge",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("EDGE_GIT_REV"), ")"),
    about = "XDP edge admission filter"
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the daemon's API is: its Unix socket, or its TCP listener.
#[derive(clap::Args, Clone)]
pub struct Connection {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "EDGE_SOCKET", default_value = edge::policy::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Use the daemon's TCP API instead: https://HOST:PORT (TLS), or http://HOST:PORT where
    /// the daemon serves plaintext.
    #[arg(long, global = true, env = "EDGE_CONNECT", value_name = "URL")]
    pub connect: Option<String>,
    /// With --connect: the file holding the bearer token.
    #[arg(long, global = true, env = "EDGE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With https://: the CA certificates (PEM) the daemon's certificate chains to.
    #[arg(long, global = true, env = "EDGE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With https://: a client certificate (PEM), for a daemon that asks for one.
    #[arg(
        long,
        global = true,
        env = "EDGE_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "EDGE_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// With https://: the name the daemon's certificate carries, if not the URL's host.
    #[arg(long, global = true, env = "EDGE_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the control daemon: attach to the config's interfaces (or adopt the pinned filter),
    /// keep the maps right, serve the API.
    Daemon {
        #[arg(long, default_value = "/etc/edge/edge.toml")]
        config: PathBuf,
        /// Log lines as text or JSON (stderr). Levels: EDGE_LOG=debug|info|warn|error.
        #[arg(long, value_enum, default_value_t)]
        log_format: edge::daemon::LogFormat,
    },
    /// Daemon status (from the pins if the daemon is down).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set the mode: off, monitor, enforce, or auto (enforce while unknown sources flood;
    /// thresholds in the config's [auto] table). Persisted by the daemon.
    Mode {
        #[arg(value_parser = ["off", "monitor", "enforce", "auto"])]
        mode: String,
    },
    /// The rolling visitor whitelist.
    #[command(subcommand)]
    Visitors(VisitorsCommand),
    /// The static allow list (CIDR prefixes that always pass).
    #[command(subcommand)]
    Allow(RulesCommand),
    /// The static deny list (CIDR prefixes that never pass).
    #[command(subcommand)]
    Deny(RulesCommand),
    /// The visitor window.
    #[command(subcommand)]
    Window(WindowCommand),
    /// The daemon's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The fleet this daemon shares its state with ([fleet] in the config; docs/fleet.md).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Admission ticket keys (SipHash-2-4, 128-bit), kept in a key ring file (mode 0600).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Mint and check admission tickets (docs/tickets.md).
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// Check a waiting room's token (edge ticket, Queue-it, JWT) as the daemon would
    /// (docs/tokens.md).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Load the filter with a policy and attach it to an interface; it stays attached (pinned
    /// under /sys/fs/bpf/edge/IFACE) after this command exits.
    Attach {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        xdp_mode: XdpModeArg,
        /// Attach even if the policy would cut this SSH session (SSH_CONNECTION).
        #[arg(long)]
        force: bool,
    },
    /// Detach the filter from an interface and remove its pins.
    Detach {
        #[arg(long)]
        iface: String,
    },
    /// Packets and bytes per reason: from the daemon, or from the pins if it is down.
    Stats {
        /// One interface; all of them if left out.
        #[arg(long)]
        iface: Option<String>,
        /// Print again every SECS seconds, with the rate since the last print.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// The sources and prefixes (/24, /48) dropped most over the last seconds, with rates
    /// estimated from the kernel's sampled drops.
    Top {
        /// Entries per list (1..=1000).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print again every SECS seconds.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Run every frame of a pcap/pcapng file through the real program with a policy's maps.
    Replay {
        pcap: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Validate a policy file (and its visitors file) without touching the kernel.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
    /// The daemon's store (its state directory), offline: the daemon must be stopped.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print the shell completion script for SHELL.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write edge.1 and one page per subcommand into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum VisitorsCommand {
    /// Record visits of IPs (IPv6: their /64) on a day (default today, UTC).
    Add {
        #[arg(required = true)]
        ips: Vec<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
    },
    /// Forget visitors.
    Remove {
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// List visitors in address order, a page at a time.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Start at this visitor (the `next:` line of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// How many visitors are in the window.
    Count {
        #[arg(long)]
        json: bool,
    },
    /// Import a file, all or nothing: a plain list, IP,YYYY-MM-DD CSV, or a combined access log.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "csv", "combined"])]
        format: String,
    },
    /// Write every visitor as IP,YYYY-MM-DD (to FILE, or standard output).
    Export { file: Option<PathBuf> },
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Add CIDR prefixes (or bare addresses).
    Add {
        #[arg(required = true)]
        cidrs: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
        /// Remove the entries after this long: 90s, 30m, 12h, 7d (1s to 3650d).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    Remove {
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// The nodes this daemon has heard from: each one's last report, stream position and lag,
    /// visitor and rule counts; the fleet snapshot's age and size; entries published, applied
    /// and refused here.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum WindowCommand {
    /// Roll the window to the clock's day although the clock jumped further than
    /// window.max_jump_days (the daemon holds such a roll: the visitors that leave the window
    /// are gone for good). Check the clock first.
    Roll,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The configuration in force: the config file's, with the mode set through the API. It
    /// is a valid config file; the API's rules follow as comments.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Make the daemon re-read its config file (as SIGHUP does). A file with an error is
    /// refused with file:line and field, and the running config stays.
    Reload {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Write a new key ring with one random key (id 1); never overwrites a file.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new current key; the current one stays valid as the previous key, the one
    /// before it is retired. The file is replaced atomically.
    Rotate {
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TicketCommand {
    /// Mint a ticket for IP (IPv6: its /64) with the current key; prints its text form.
    Issue {
        #[arg(long)]
        ip: std::net::IpAddr,
        /// Valid for this long: 90s, 10m, 12h, 1d (1s to 3650d).
        #[arg(long, default_value = "10m")]
        ttl: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a ticket (text form) against the key ring, and against IP if given.
    Verify {
        ticket: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Verify TOKEN with the verifiers the config file sets up ([admission] keys,
    /// [admission.queueit], [admission.jwt]; a jwks_url is fetched). Says which check failed.
    /// Exit 0 only for a token that would admit (the replay limit is the daemon's to count).
    Verify {
        /// The token's text, or `-` to read it from standard input (out of `ps` and history).
        token: String,
        #[arg(long, default_value = "/etc/edge/edge.toml")]
        config: PathBuf,
        /// edge, queueit or jwt; detected from the token's text when left out.
        #[arg(long, value_parser = ["edge", "queueit", "jwt"])]
        kind: Option<String>,
        /// The address presenting the token (Queue-it tokens and JWTs admit it; required for
        /// them to admit anything).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Rebuild a store whose log is damaged (the daemon refuses to start on it): keep every
    /// valid record, skip the damaged bytes, and move the old files into
    /// STATE_DIR/salvaged-<time>/. Reports what it kept and skipped.
    Salvage {
        /// The state directory; default: `daemon.state_dir` of the config file.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, default_value = "/etc/edge/edge.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum XdpModeArg {
    /// Native if the driver supports it, generic (skb) otherwise.
    Auto,
    Native,
    Skb,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => XdpMode::Default,
            XdpModeArg::Native => XdpMode::Driver,
            XdpModeArg::Skb => XdpMode::Skb,
        }
    }
}

impl Connection {
    /// Where to reach the daemon.
    pub fn target(&self) -> anyhow::Result<edge::client::Target> {
        use edge::client::{Target, TcpTarget};
        let Some(url) = &self.connect else { return Ok(Target::Unix(self.socket.clone())) };
        let token_file = self.token_file.clone().ok_or_else(|| {
            anyhow::anyhow!("--connect needs --token-file (the daemon's bearer token)")
        })?;
        Ok(Target::Tcp(TcpTarget {
            url: url.clone(),
            token_file,
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            server_name: self.server_name.clone(),
        }))
    }
}
