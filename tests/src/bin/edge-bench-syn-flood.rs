//! `cargo xtask bench --lab`, second part: a SYN flood at the generator's full rate, every
//! source forged from the visitor whitelist, against three servers side by side in one run:
//!
//! 1. edge with `[syn_cookies] mode = "attack"`: the program answers every SYN itself;
//! 2. edge with cookies off: the whitelist passes the forged SYNs to the kernel, which has
//!    its default `tcp_syncookies = 1` (cookies once the SYN queue overflows);
//! 3. the kernel alone, no XDP program, `tcp_syncookies = 1`.
//!
//! For each: the listener's counters (what reached the server's TCP stack), the most
//! half-open connections seen at once, the share of a real visitor's TCP connections that
//! complete during the flood, the SYN-ACKs per second the server sent (its own counters) and
//! those that came back to the generator's side, and the receiver CPU's time per SYN-ACK sent. The lab is the first part's (see
//! `edge-bench-lab` and `edge_tests::generator`): the generator on CPU 1, the receiver's NAPI
//! on CPU 0. The replies go back through a program on the generator's veth that counts the
//! SYN-ACKs, passes the lab's own clients' and drops the rest: forged sources' replies have
//! nowhere to go.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use edge_tests::{
    daemon::Daemon,
    edge_bin,
    generator::{
        enter, lab_visitor, netns, pin_napi_threads, receiver_setup, set_cpu, tcp_connects_from,
        Generator, NoIdleSleep, GENERATOR_CPU, LAB_VISITORS,
    },
    lab::{sh, Lab, SERVER_ADDR, TODAY},
    BASELINE_OBJECT,
};

/// The real visitors that connect during the floods (on the whitelist, as the forged sources):
/// each flood's two client threads have an address of their own, so no connection meets the
/// TIME_WAIT of an earlier one with the same ports (its SYN would go to the kernel and look
/// like a forged one reaching the listener). The first is also the route for forged addresses.
const VISITORS: [&str; 6] =
    ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15"];
const VISITOR: &str = VISITORS[0];
const FLOOD: Duration = Duration::from_secs(12);
/// A connection may lose its SYN (or SYN-ACK) once: Linux retransmits it after 1 s.
const CONNECT_TIMEOUT_MS: u64 = 3000;
/// A client thread's source ports, each used once per flood (more than a thread connects in
/// a flood: it reports running out).
const CLIENT_PORTS: std::ops::Range<u16> = 10_000..64_000;
/// The generator's SYN flood program (`edge-ebpf/src/bin/baseline.rs`).
const SYN_FLOOD: &str = "generate_visitor_syn";
/// The listener counters shown (`nstat` names), from the server namespace's `/proc/net/snmp`
/// and `/proc/net/netstat`.
const LISTENER_COUNTERS: [&str; 8] = [
    "TcpPassiveOpens",
    "TcpExtSyncookiesSent",
    "TcpExtSyncookiesRecv",
    "TcpExtSyncookiesFailed",
    "TcpExtTCPReqQFullDoCookies",
    "TcpExtTCPReqQFullDrop",
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
];

#[derive(serde::Serialize)]
struct Case {
    server: &'static str,
    offered_pps: f64,
    /// SYN-ACKs the server sent, per second: edge's `syn_cookie_sent` and the kernel's
    /// `TcpExtSyncookiesSent` (the few a kernel sends from its SYN queue uncounted).
    syn_acks_pps: f64,
    /// SYN-ACKs that reached the generator's side, per second (the rest were lost on the way
    /// back, in the generator's veth ring: its NAPI shares a CPU with the generator).
    syn_acks_back_pps: f64,
    /// Share of the receiver CPU its NAPI thread ran (edge, or the kernel's TCP stack).
    receiver_busy: f64,
    /// The receiver's CPU time per SYN-ACK sent.
    receiver_ns_per_syn_ack: f64,
    /// Whether a client thread used up its ports before the flood ended (its count is then
    /// a floor, not what the flood allowed).
    clients_ran_out: bool,
    connections: u64,
    connected: u64,
    success_share: f64,
    /// Increase of each listener counter over the flood.
    listener: BTreeMap<&'static str, u64>,
    /// The most SYN_RECV sockets of forged sources on the origin's port seen at once (sampled
    /// every 50 ms).
    max_forged_half_open: u64,
    /// Increase of edge's counters over the flood, by reason (edge's cases only).
    edge: BTreeMap<String, u64>,
}

fn say(line: &str) {
    eprintln!("bench-syn-flood: {line}");
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let cases = run().context("the SYN flood benchmark")?;
    if json {
        println!("{}", serde_json::to_string(&cases)?);
    } else {
        print(&cases);
    }
    Ok(())
}

fn run() -> Result<Vec<Case>> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("needs two CPUs: one for the generator, one for the receiver");
    }
    let _awake = NoIdleSleep::hold();
    let mut lab = Lab::new(&VISITORS)?;
    let mut serve = lab.in_server("taskset");
    serve
        .args(["-c", &GENERATOR_CPU.to_string()])
        .arg(edge_tests::probe())
        .args(["serve", &format!("{SERVER_ADDR}:443")]);
    lab.spawn(serve)?;
    receiver_setup(&lab)?;
    let sink = ReplySink::attach(&lab)?;
    // Replies to the forged sources leave through the generator's veth to one neighbour, as
    // through a router (on-link, the kernel would resolve a neighbour per forged address).
    sh(Command::new("ip").args([
        "-n",
        &lab.server_ns,
        "route",
        "replace",
        "128.0.0.0/2",
        "via",
        VISITOR,
        "dev",
        &lab.server_if,
        "onlink",
    ]))?;
    let gen = Generator::new(&lab)?;

    let policy = "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\"]\n[unknown]\nrate_pps = 0\n\
                  global_pps = 0\n[syn_cookies]\nmode = \"attack\"\nreply_pps = 20000000\n\
                  reply_burst = 2000000\n";
    let iface = lab.server_if.clone();
    let mut daemon =
        Daemon::configure_with(&lab, &[&iface], policy, TODAY, "xdp_mode = \"native\"")?;
    let visitors = daemon.config_dir().join("visitors.txt");
    let list: Vec<String> = (0..LAB_VISITORS).map(|i| lab_visitor(i).to_string()).collect();
    std::fs::write(&visitors, list.join("\n") + "\n" + &VISITORS.join("\n") + "\n")?;
    daemon.start()?;
    daemon.wait_ready()?;
    say(&format!("importing {LAB_VISITORS} visitors..."));
    let import = daemon.cli(&["visitors", "import", &visitors.display().to_string()]);
    if import.code != 0 {
        bail!("edge visitors import: {}", import.stderr);
    }
    if !tcp_connects_in(&lab, VISITOR)? {
        bail!("the visitor does not connect before the flood");
    }

    let mut cases = Vec::new();
    cases.push(flood(0, &lab, &gen, &sink, Some(&daemon), "edge, cookies on")?);
    daemon.set_syn_cookies("off")?;
    cases.push(flood(1, &lab, &gen, &sink, Some(&daemon), "edge, cookies off")?);
    daemon.stop()?;
    sh(lab.in_server(edge_bin()).args(["detach", "--iface", &iface]).stdout(Stdio::null()))?;
    let syncookies = sh(lab.in_server("cat").arg("/proc/sys/net/ipv4/tcp_syncookies"))?;
    if syncookies.trim() != "1" {
        bail!("tcp_syncookies is {} after edge, not the kernel's default 1", syncookies.trim());
    }
    cases.push(flood(2, &lab, &gen, &sink, None, "kernel alone, tcp_syncookies = 1")?);
    Ok(cases)
}

/// One flood of `FLOOD` at the generator's full rate, a real visitor connecting throughout.
fn flood(
    round: usize,
    lab: &Lab,
    gen: &Generator,
    sink: &ReplySink,
    daemon: Option<&Daemon>,
    server: &'static str,
) -> Result<Case> {
    say(&format!("{server}: SYN flood from the visitor set, a real visitor connecting..."));
    let edge_before = daemon.map(edge_counters).transpose()?.unwrap_or_default();
    let listener_before = listener_counters(lab)?;
    let replies_before = sink.replies()?;
    let busy_before = gen.receiver_runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    let max_half_open = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (ns, stop, max) = (netns(&lab.server_ns), stop.clone(), max_half_open.clone());
        std::thread::spawn(move || -> Result<()> {
            enter(&ns)?;
            set_cpu(0, GENERATOR_CPU)?;
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(forged_half_open_on_443()?, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })
    };
    let started = Instant::now();
    let (offered_pps, connections, connected, clients_ran_out) =
        std::thread::scope(|s| -> Result<_> {
            let flood = s.spawn(|| gen.run(SYN_FLOOD, FLOOD));
            std::thread::sleep(Duration::from_secs(1));
            let client_ns = netns(&lab.client_ns);
            let clients: Vec<_> = (0..2)
                .map(|thread| {
                    let ns = client_ns.clone();
                    let address = VISITORS[2 * round + thread];
                    s.spawn(move || -> Result<(u64, u64, bool)> {
                        enter(&ns)?;
                        set_cpu(0, GENERATOR_CPU)?;
                        let (mut tried, mut ok) = (0u64, 0u64);
                        let from: std::net::IpAddr = address.parse()?;
                        let to: SocketAddr = format!("{SERVER_ADDR}:443").parse()?;
                        let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
                        let window = FLOOD - Duration::from_millis(CONNECT_TIMEOUT_MS);
                        for port in CLIENT_PORTS {
                            if started.elapsed() >= window {
                                return Ok((tried, ok, false));
                            }
                            let src = SocketAddr::new(from, port);
                            let Some(connected) = tcp_connects_from(src, to, timeout) else {
                                continue;
                            };
                            tried += 1;
                            ok += u64::from(connected);
                        }
                        Ok((tried, ok, started.elapsed() < window))
                    })
                })
                .collect();
            let (mut tried, mut ok, mut ran_out) = (0, 0, false);
            for client in clients {
                let (t, o, out) =
                    client.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
                tried += t;
                ok += o;
                ran_out |= out;
            }
            let offered = flood.join().map_err(|_| anyhow::anyhow!("the generator panicked"))??;
            Ok((offered, tried, ok, ran_out))
        })?;
    let secs = started.elapsed().as_secs_f64();
    let busy = gen.receiver_runtime()?.saturating_sub(busy_before);
    let replies = sink.replies()? - replies_before;
    stop.store(true, Ordering::Relaxed);
    sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))??;
    let listener_after = listener_counters(lab)?;
    let listener: BTreeMap<&'static str, u64> = LISTENER_COUNTERS
        .iter()
        .map(|&name| (name, listener_after[name].saturating_sub(listener_before[name])))
        .collect();
    // Every reason of edge's that counted a packet during the flood.
    let edge_after = daemon.map(edge_counters).transpose()?.unwrap_or_default();
    let edge: BTreeMap<String, u64> = edge_after
        .iter()
        .map(|(reason, &n)| {
            (reason.clone(), n.saturating_sub(edge_before.get(reason).copied().unwrap_or(0)))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let sent = edge.get("syn_cookie_sent").copied().unwrap_or(0)
        + listener.get("TcpExtSyncookiesSent").copied().unwrap_or(0);
    Ok(Case {
        server,
        offered_pps,
        syn_acks_pps: sent as f64 / secs,
        syn_acks_back_pps: replies as f64 / secs,
        receiver_busy: busy.as_secs_f64() / secs,
        receiver_ns_per_syn_ack: busy.as_nanos() as f64 / sent.max(1) as f64,
        clients_ran_out,
        connections,
        connected,
        success_share: connected as f64 / connections.max(1) as f64,
        listener,
        max_forged_half_open: max_half_open.load(Ordering::Relaxed),
        edge,
    })
}

/// One TCP connection from `src` in the client namespace, before the flood.
fn tcp_connects_in(lab: &Lab, src: &str) -> Result<bool> {
    lab.connects(edge_tests::probe(), src, 443, CONNECT_TIMEOUT_MS as u32)
}

/// SYN_RECV sockets (state 03) with local port 443 and a forged peer (outside the lab's
/// 192.0.2.0/24) in the calling thread's namespace.
fn forged_half_open_on_443() -> Result<u64> {
    let tcp = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
    Ok(tcp
        .lines()
        .skip(1)
        .filter(|line| {
            // "sl local_address rem_address st ...", addresses as host-order hex: 192.0.2.x
            // is "xx0200C0".
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[1].ends_with(":01BB")
                && fields[3] == "03"
                && !fields[2].split(':').next().is_some_and(|a| a.ends_with("0200C0"))
        })
        .count() as u64)
}

/// The server namespace's TCP counters, as `nstat` names them (`TcpPassiveOpens`,
/// `TcpExtSyncookiesSent`, ...).
fn listener_counters(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let ns = netns(&lab.server_ns);
    std::thread::spawn(move || -> Result<BTreeMap<String, u64>> {
        enter(&ns)?;
        let mut counters = BTreeMap::new();
        for file in ["/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"] {
            let text = std::fs::read_to_string(file).with_context(|| file.to_string())?;
            let lines: Vec<&str> = text.lines().collect();
            // Pairs of lines: "Tcp: Name ...", then "Tcp: value ...".
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let (Some((group, names)), Some((_, values))) =
                    (names.split_once(": "), values.split_once(": "))
                else {
                    continue;
                };
                for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(value) = value.parse() {
                        counters.insert(format!("{group}{name}"), value);
                    }
                }
            }
        }
        for name in LISTENER_COUNTERS {
            if !counters.contains_key(name) {
                bail!("no counter {name} in the server namespace's /proc/net");
            }
        }
        Ok(counters)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("reading the counters panicked"))?
}

/// edge's packet counters by reason (`edge stats --json`).
fn edge_counters(daemon: &Daemon) -> Result<BTreeMap<String, u64>> {
    let run = daemon.cli(&["stats", "--json"]);
    if run.code != 0 {
        bail!("edge stats: {}", run.stderr);
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout)?;
    let mut counters = BTreeMap::new();
    for row in rows {
        if let (Some(reason), Some(packets)) = (row["reason"].as_str(), row["packets"].as_u64()) {
            *counters.entry(reason.to_string()).or_default() += packets;
        }
    }
    Ok(counters)
}

/// `reply_sink` on the generator's veth, its NAPI in a thread on the generator's CPU (the
/// receiver's CPU stays the filter's), until dropped.
struct ReplySink {
    ebpf: aya::Ebpf,
}

impl ReplySink {
    fn attach(lab: &Lab) -> Result<Self> {
        let iface = lab.client_if.clone();
        let ns = netns(&lab.client_ns);
        let ebpf = std::thread::spawn(move || -> Result<aya::Ebpf> {
            enter(&ns)?;
            let mut ebpf = aya::Ebpf::load(BASELINE_OBJECT)?;
            let prog: &mut aya::programs::Xdp =
                ebpf.program_mut("reply_sink").context("reply_sink")?.try_into()?;
            prog.load()?;
            prog.attach(&iface, aya::programs::XdpMode::Driver)?;
            Ok(ebpf)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attaching the reply sink panicked"))??;
        // The veth has NAPI once a program is attached. `ip netns exec` mounts the namespace's
        // own /sys (nsenter keeps the host's).
        let threaded = format!("echo 1 > /sys/class/net/{}/threaded", lab.client_if);
        sh(Command::new("ip").args(["netns", "exec", &lab.client_ns, "sh", "-c", &threaded]))?;
        pin_napi_threads(&lab.client_if, GENERATOR_CPU)?;
        Ok(Self { ebpf })
    }

    /// SYN-ACKs counted so far, all CPUs.
    fn replies(&self) -> Result<u64> {
        let map: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(self.ebpf.map("replies").context("replies")?)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }
}

fn print(cases: &[Case]) {
    println!(
        "\n== a SYN flood at the generator's full rate, sources forged from the visitor set =="
    );
    println!(
        "{:<34} {:>11} {:>11} {:>11} {:>8} {:>9} {:>22}",
        "server",
        "offered pps",
        "SYN-ACK/s",
        "came back",
        "rx busy",
        "ns/reply",
        "visitor connections"
    );
    for c in cases {
        println!(
            "{:<34} {:>11.0} {:>11.0} {:>11.0} {:>7.0}% {:>9.0} {:>9}/{:<5} {:>6.2}%{}",
            c.server,
            c.offered_pps,
            c.syn_acks_pps,
            c.syn_acks_back_pps,
            c.receiver_busy * 100.0,
            c.receiver_ns_per_syn_ack,
            c.connected,
            c.connections,
            c.success_share * 100.0,
            if c.clients_ran_out { " (the clients ran out of ports)" } else { "" }
        );
    }
    println!(
        "SYN-ACK/s: sent, by the server's counters (edge's syn_cookie_sent and the kernel's \
         TcpExtSyncookiesSent); came back: counted on the generator's side; ns/reply: the \
         receiver's CPU per SYN-ACK sent"
    );
    println!(
        "\nthe listener's counters over each flood (TcpExtTCPReqQFullDoCookies also counts each \
         cookie edge's program makes: the kernel's helper counts it), and the most half-open \
         connections of forged sources seen at once:"
    );
    for c in cases {
        let counters: Vec<String> = c.listener.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!(
            "{}: {}; forged SYN_RECV at most {}",
            c.server,
            counters.join(", "),
            c.max_forged_half_open
        );
        if !c.edge.is_empty() {
            let edge: Vec<String> = c.edge.iter().map(|(n, v)| format!("{n} {v}")).collect();
            println!("{}: edge counted {}", c.server, edge.join(", "));
        }
    }
    // With tcp_syncookies = 2 the kernel answers every SYN that reaches a listener with a
    // cookie of its own (TcpExtSyncookiesSent) and keeps no half-open connection.
    let on = &cases[0];
    println!(
        "\nedge, cookies on: SYNs that reached the listener (TcpExtSyncookiesSent) {}, forged \
         half-open connections {} (target 0 and 0); the real visitor's connections {:.2}% \
         (target >= 99.9%)",
        on.listener["TcpExtSyncookiesSent"],
        on.max_forged_half_open,
        on.success_share * 100.0
    );
    for c in &cases[1..] {
        println!(
            "{} / edge with cookies: receiver CPU per SYN-ACK sent {:.2}x, SYN-ACKs sent per \
             second {:.2}x, connections {:.2}% against {:.2}%",
            c.server,
            c.receiver_ns_per_syn_ack / on.receiver_ns_per_syn_ack.max(1e-9),
            c.syn_acks_pps / on.syn_acks_pps.max(1e-9),
            c.success_share * 100.0,
            on.success_share * 100.0
        );
    }
}
