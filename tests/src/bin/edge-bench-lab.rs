//! `cargo xtask bench --lab`: edge under a real flood in the namespace lab, side by side with
//! nftables, in one run.
//!
//! The generator is BPF_PROG_TEST_RUN in live-frames mode on the client's veth: each run
//! transmits its frame (XDP_TX) to the server's veth, with one source, a random IPv4 or IPv6
//! source per frame, or one of a botnet's 100 k fixed sources, its Ethernet header starting a
//! cache line as a NIC would place it. The generator
//! runs on CPU 1; the receiver's NAPI runs threaded, pinned to CPU 0; neither CPU halts when
//! idle during the run (see `NoIdleSleep`).
//!
//! 1. Drop rate for unknown sources: edge (native XDP), a one-lookup XDP reference, an
//!    nftables netdev-ingress rule with the same whitelist as a set, the ceiling: an XDP
//!    program that drops every frame unread (no filter can drop more in this harness, so
//!    ceiling / nftables bounds any filter's ratio), and one that reads the headers and drops;
//!    under the botnet (each zombie over a budget of its own) also each program's own time
//!    per packet and the per-source state edge kept; each with the generator's offered rate
//!    beside it, the median of three rounds taken in turn. Beside each, the CPU time of the
//!    receiver's NAPI thread: its share of the run (under 100 %, the generator set the rate)
//!    and per dropped packet (what the filter costs the receiver at that load).
//! 2. Under a random-source flood at the generator's full rate: the share of TCP connections
//!    from a visitor and an admitted client that complete, and the unknown packets per second
//!    that reach the origin against the configured global budget.
use std::{
    io::Write as _,
    net::UdpSocket,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    EbpfLoader,
};
use edge_tests::BASELINE_OBJECT;
use edge_tests::{
    edge_bin,
    frames::{frame, L4},
    lab::{sh, Lab},
};

const VISITOR: &str = "192.0.2.10";
const ADMITTED: &str = "192.0.2.20";
const UNKNOWN_SOURCE: &str = "203.0.113.7";
/// The whitelist every filter holds: this many addresses spread over the IPv4 space (plus the
/// lab's visitor). Big enough that a lookup in a hash of it misses the caches, as a real
/// three-week visitor set does; nftables still loads it in seconds.
const WHITELIST: u32 = 1_000_000;
const MEASURE: Duration = Duration::from_secs(5);
const FLOOD: Duration = Duration::from_secs(12);
const GLOBAL_BUDGET_PPS: u32 = 20_000;
/// Rounds of the drop-rate measurement (each filter in turn), the median reported.
const ROUNDS: usize = 3;
const ONE_LOOKUP: &str = "one-lookup XDP";
const READ_HEADERS: &str = "read-headers XDP";
const CEILING: &str = "drop-all XDP";
const EDGE: &str = "edge";
const NFTABLES: &str = "nftables";
const GENERATOR_CPU: usize = 1;
const RECEIVER_CPU: usize = 0;

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let report = run().context("the lab benchmark")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

#[derive(serde::Serialize, Clone)]
struct DropRate {
    filter: &'static str,
    sources: &'static str,
    offered_pps: f64,
    dropped_pps: f64,
    /// Share of the receiver CPU its NAPI thread ran (the filter's work, and for nftables the
    /// stack up to the hook): under 1 when the generator, not the filter, sets the rate.
    receiver_busy: f64,
    /// The NAPI thread's CPU time per dropped packet: the filter's cost, whatever the rate.
    receiver_ns_per_drop: f64,
    /// Every round's drop rate, ascending (the median is `dropped_pps`).
    rounds_dropped_pps: Vec<f64>,
    /// Under the botnet, the XDP program's own time per packet (the kernel's BPF run-time
    /// statistics, on only then): what the filter costs apart from the stack's work for the
    /// packets it passes.
    program_ns_per_packet: Option<f64>,
}

#[derive(serde::Serialize)]
struct UnderFlood {
    /// false: the generator's full rate; true: paced within edge's drop rate.
    paced: bool,
    offered_pps: f64,
    dropped_pps: f64,
    /// Unknown packets edge passed within the budgets (its counter).
    passed_pps: f64,
    connections: u64,
    connected: u64,
    success_share: f64,
    unknown_at_origin_pps: f64,
    budget_pps: u32,
}

#[derive(serde::Serialize)]
struct Report {
    drop_rates: Vec<DropRate>,
    botnet: Botnet,
    under_flood: Vec<UnderFlood>,
}

/// What edge kept per source under the botnet (the median round's).
#[derive(serde::Serialize, Clone, Default)]
struct Botnet {
    /// Unknown packets edge passed within the sources' budgets, per second.
    passed_pps: f64,
    /// Per-source buckets in the map after the flood, and its capacity.
    buckets: u64,
    capacity: u32,
}

fn say(line: &str) {
    eprintln!("bench-lab: {line}");
}

fn run() -> Result<Report> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("needs two CPUs: one for the generator, one for the receiver");
    }
    let _awake = NoIdleSleep::hold();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new(&[VISITOR, ADMITTED])?;
    // The origin's server and the clients run on the generator's CPU: the receiver's CPU is
    // the filter's (on a real host the application has cores of its own).
    let mut serve = lab.in_server("taskset");
    serve.args(["-c", &GENERATOR_CPU.to_string()]).arg(probe()).args(["serve", "192.0.2.1:443"]);
    lab.spawn(serve)?;
    receiver_setup(&lab)?;
    let gen = Generator::new(&lab)?;

    // The whitelist, for both filters.
    let whitelist: Vec<String> = (0..WHITELIST)
        // Multiplying by an odd constant permutes u32: distinct, spread addresses, kept in
        // 128.0.0.0/2 (apart from the lab's 192.0.2.0/24 and the generator's random sources).
        .map(|i| {
            let a = i.wrapping_mul(2_654_435_761) & 0x3fff_ffff | 0x8000_0000;
            std::net::Ipv4Addr::from(a).to_string()
        })
        .chain([VISITOR.to_string()])
        .collect();
    std::fs::write(dir.path().join("visitors.csv"), whitelist.join("\n") + "\n")?;
    // Sources the origin does not count as unknown: the whitelist and the admitted client.
    let known: Arc<std::collections::HashSet<u32>> = Arc::new(
        whitelist
            .iter()
            .chain([&ADMITTED.to_string()])
            .map(|a| a.parse::<std::net::Ipv4Addr>().map(u32::from))
            .collect::<Result<_, _>>()?,
    );

    // Drop rates: each filter in turn, ROUNDS times, so that all see the same moments of a
    // noisy host; each figure is the median round, with its offered rate.
    let policy = dir.path().join("drop.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[scope]\nprotect = [\"udp/443\", \"tcp/443\"]\n\
         [unknown]\nrate_pps = 0\nglobal_pps = 0\n[lists]\nvisitors = \"visitors.csv\"\n",
    )?;
    // The botnet's zombies each get a budget of their own (1 packet a second), which they all
    // exceed; the global budget is out of the way, so every packet is judged by its source's
    // bucket: the per-source state a botnet of real addresses makes.
    let botnet_policy = dir.path().join("botnet.toml");
    std::fs::write(
        &botnet_policy,
        "mode = \"enforce\"\n[scope]\nprotect = [\"udp/443\", \"tcp/443\"]\n\
         [unknown]\nrate_pps = 1\nburst = 1\nglobal_pps = 1000000000\n\
         [lists]\nvisitors = \"visitors.csv\"\n",
    )?;
    let mut rounds = Vec::new();
    let mut botnets = Vec::new();
    for round in 1..=ROUNDS {
        say(&format!("drop rates, round {round} of {ROUNDS}"));
        // The ceiling: every frame dropped unread, native.
        {
            let _ceiling = Reference::attach(&lab, "drop_all", &[])?;
            rounds.extend(measure(&gen, CEILING, Some("drop_all"), &FLOODS, || xdp_drops(&lab))?);
        }
        // The same, reading the header a filter must read.
        {
            let _headers = Reference::attach(&lab, "read_headers", &[])?;
            rounds.extend(measure(&gen, READ_HEADERS, Some("read_headers"), &FLOODS, || {
                xdp_drops(&lab)
            })?);
        }
        // The yardstick: a one-lookup XDP whitelist (a preallocated hash map), native.
        {
            let _anchor = Reference::attach(&lab, "anchor_hash", &whitelist)?;
            rounds.extend(measure(&gen, ONE_LOOKUP, Some("anchor_hash"), &FLOODS, || {
                xdp_drops(&lab)
            })?);
        }
        // edge, native XDP: no budget for unknown sources, then the botnet with budgets.
        attach(&lab, &policy)?;
        rounds.extend(measure(&gen, EDGE, Some("edge"), &FLOODS[..3], || edge_drops(&lab))?);
        detach(&lab)?;
        attach(&lab, &botnet_policy)?;
        let passed_before = edge_unknown_passed(&lab)?;
        let botnet = measure(&gen, EDGE, Some("edge"), &FLOODS[3..], || edge_drops(&lab))?;
        botnets.push((
            botnet[0].dropped_pps,
            Botnet {
                passed_pps: (edge_unknown_passed(&lab)? - passed_before) as f64
                    / MEASURE.as_secs_f64(),
                buckets: edge::filter::pinned_bucket_count(&lab.server_if)?,
                capacity: edge_common::maps::UNKNOWN_BUCKETS_CAPACITY,
            },
        ));
        rounds.extend(botnet);
        detach(&lab)?;
        // nftables: the same whitelist as a set, at netdev ingress on the same interface.
        nft_load(&lab, &whitelist, dir.path())?;
        rounds.extend(measure(&gen, NFTABLES, None, &FLOODS, || nft_drops(&lab))?);
        nft_clear(&lab)?;
    }
    let drop_rates = medians(rounds);
    botnets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let botnet = botnets[botnets.len() / 2].1.clone();

    let full = under_flood(&mut lab, &gen, dir.path(), None, &known)?;
    // The same at 70% of what edge judged per second under the full flood (its capacity on
    // the receiver's one CPU with this policy): what the filter does when the veth's ring in
    // front of it does not overflow. The share of runs to send is calibrated first.
    let target = (full.dropped_pps + full.passed_pps) * 0.7;
    let mut share = target / full.offered_pps;
    for _ in 0..2 {
        let sent = gen.run_at("generate_random", Duration::from_secs(1), Some(share))?;
        share = (share * target / sent.max(1.0)).min(1.0);
    }
    let paced = under_flood(&mut lab, &gen, dir.path(), Some(share), &known)?;
    Ok(Report { drop_rates, botnet, under_flood: vec![full, paced] })
}

/// Per filter and kind of sources, the round with the median drop rate (and its offered rate),
/// with every round's drop rate beside it.
fn medians(rounds: Vec<DropRate>) -> Vec<DropRate> {
    let mut out: Vec<DropRate> = Vec::new();
    for r in &rounds {
        if out.iter().any(|o| o.filter == r.filter && o.sources == r.sources) {
            continue;
        }
        let mut same: Vec<&DropRate> =
            rounds.iter().filter(|o| o.filter == r.filter && o.sources == r.sources).collect();
        same.sort_by(|a, b| a.dropped_pps.total_cmp(&b.dropped_pps));
        let median = same[same.len() / 2];
        out.push(DropRate {
            rounds_dropped_pps: same.iter().map(|o| o.dropped_pps).collect(),
            ..median.clone()
        });
    }
    out
}

/// The floods every filter is measured under: one source, random IPv4 sources, random IPv6
/// sources, and a botnet of 100 k fixed IPv4 sources.
const FLOODS: [(&str, &str); 4] = [
    ("generate_fixed", "single"),
    ("generate_random", "random"),
    ("generate_random_v6", "random6"),
    ("generate_botnet", "botnet"),
];

/// Drops per second of `filter` (its counter `drops`) under each of `floods` in turn, at the
/// generator's full rate.
fn measure(
    gen: &Generator,
    filter: &'static str,
    xdp_program: Option<&str>,
    floods: &[(&'static str, &'static str)],
    drops: impl Fn() -> Result<u64>,
) -> Result<Vec<DropRate>> {
    floods
        .iter()
        .copied()
        .map(|(program, sources)| {
            say(&format!("{filter}, {sources} source(s)..."));
            // The botnet's passes cost the stack more than the drops cost the filter: only
            // there is the program's own time taken apart (the statistics cost every run a
            // clock read, so they stay off for the other floods).
            let stats = match xdp_program {
                Some(name) if sources == "botnet" => Some((
                    aya::sys::enable_stats(aya::sys::Stats::RunTime)?,
                    name,
                    program_run_time(name)?,
                )),
                _ => None,
            };
            let before = drops()?;
            let busy_before = gen.receiver_runtime()?;
            let offered_pps = gen.run(program, MEASURE)?;
            let busy = gen.receiver_runtime()?.saturating_sub(busy_before);
            let dropped = drops()? - before;
            let program_ns_per_packet = match stats {
                Some((_on, name, (time_before, runs_before))) => {
                    let (time, runs) = program_run_time(name)?;
                    let runs = runs.saturating_sub(runs_before).max(1);
                    Some(time.saturating_sub(time_before).as_nanos() as f64 / runs as f64)
                }
                None => None,
            };
            Ok(DropRate {
                filter,
                sources,
                offered_pps,
                dropped_pps: dropped as f64 / MEASURE.as_secs_f64(),
                receiver_busy: busy.as_secs_f64() / MEASURE.as_secs_f64(),
                receiver_ns_per_drop: busy.as_nanos() as f64 / dropped.max(1) as f64,
                rounds_dropped_pps: vec![],
                program_ns_per_packet,
            })
        })
        .collect()
}

/// Run time and runs so far of the loaded XDP programs called `name` (BPF run-time statistics).
fn program_run_time(name: &str) -> Result<(Duration, u64)> {
    let mut total = (Duration::ZERO, 0);
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.name_as_str() == Some(name) {
            total.0 += info.run_time();
            total.1 += info.run_count();
        }
    }
    Ok(total)
}

/// The origin under a random-source flood: visitors and admitted clients connect, unknown
/// sources get the global budget.
fn under_flood(
    lab: &mut Lab,
    gen: &Generator,
    dir: &Path,
    pace: Option<f64>,
    known: &Arc<std::collections::HashSet<u32>>,
) -> Result<UnderFlood> {
    let keys = dir.join("ticket.keys");
    let _ = std::fs::remove_file(&keys);
    Command::new(edge_bin()).args(["key", "generate", "--out"]).arg(&keys).output()?;
    let policy = dir.join("flood.toml");
    std::fs::write(
        &policy,
        format!(
            "mode = \"enforce\"\n[scope]\nprotect = [\"udp/443\", \"tcp/443\"]\n\
             [unknown]\nrate_pps = 100\nglobal_pps = {GLOBAL_BUDGET_PPS}\n\
             [lists]\nvisitors = \"visitors.csv\"\n\
             [admission]\nkeys = \"ticket.keys\"\nknock_port = 7000\n"
        ),
    )?;
    attach(lab, &policy)?;
    let ticket = sh(Command::new(edge_bin())
        .args(["ticket", "issue", "--ip", ADMITTED, "--ttl", "1h", "--key"])
        .arg(&keys))?;
    let knock = lab
        .in_client(probe())
        .args(["knock", "--from", ADMITTED, "--to", "192.0.2.1:7000", "--ticket", ticket.trim()])
        .status()?;
    if !knock.success() || !connects(lab, ADMITTED, 3000)? {
        bail!("the admitted client does not connect before the flood");
    }

    // The origin's UDP socket counts what reaches it from unknown sources (a random source
    // that happens to be on the whitelist is a visitor's address: edge passes it as one).
    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let origin = {
        let (ns, stop, arrived) = (netns(&lab.server_ns), stop.clone(), arrived.clone());
        let known = known.clone();
        std::thread::spawn(move || -> Result<()> {
            enter(&ns)?;
            set_cpu(0, GENERATOR_CPU)?;
            let socket = UdpSocket::bind("192.0.2.1:443")?;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            // Both CPUs are busy (generator, receiver): a deep buffer lets this thread catch
            // up, so what is counted is what edge let through, not what the app missed.
            let size: libc::c_int = 256 << 20;
            // SAFETY: setsockopt on our socket with an int option.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let std::net::IpAddr::V4(from) = from.ip() else { continue };
                    if !known.contains(&u32::from(from)) {
                        arrived.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        })
    };

    match pace {
        None => say("random-source flood at the generator's full rate, clients connecting..."),
        Some(share) => say(&format!(
            "random-source flood, {:.0}% of the generator's runs sent, clients connecting...",
            share * 100.0
        )),
    }
    let before = edge_drops(lab)?;
    let passed_before = edge_unknown_passed(lab)?;
    let flooding = std::thread::scope(|s| -> Result<(f64, u64, u64)> {
        let flood = s.spawn(|| gen.run_at("generate_random", FLOOD, pace));
        // Let the flood reach full rate, then connect for a fixed window.
        std::thread::sleep(Duration::from_secs(1));
        let window = Instant::now();
        // Clients in the client namespace, two at a time (one per address), each connection
        // with a 3 s limit (one SYN retransmission), on the generator's CPU.
        let client_ns = netns(&lab.client_ns);
        let clients: Vec<_> = [VISITOR, ADMITTED]
            .into_iter()
            .map(|src| {
                let ns = client_ns.clone();
                s.spawn(move || -> Result<(u64, u64)> {
                    enter(&ns)?;
                    set_cpu(0, GENERATOR_CPU)?;
                    let (mut tried, mut ok) = (0u64, 0u64);
                    while window.elapsed() < FLOOD - Duration::from_secs(3) {
                        tried += 1;
                        ok += u64::from(tcp_connects(src, "192.0.2.1:443", 3000));
                    }
                    Ok((tried, ok))
                })
            })
            .collect();
        let (mut tried, mut ok) = (0u64, 0u64);
        for client in clients {
            let (t, o) = client.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
            tried += t;
            ok += o;
        }
        let offered = flood.join().map_err(|_| anyhow::anyhow!("generator panicked"))??;
        Ok((offered, tried, ok))
    })?;
    // What edge passed during the flood, and what the origin received of it once its socket
    // is drained; both per second of flood.
    let dropped = (edge_drops(lab)? - before) as f64 / FLOOD.as_secs_f64();
    let passed = (edge_unknown_passed(lab)? - passed_before) as f64 / FLOOD.as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    origin.join().map_err(|_| anyhow::anyhow!("origin panicked"))??;
    let unknown_at_origin_pps = arrived.load(Ordering::Relaxed) as f64 / FLOOD.as_secs_f64();
    detach(lab)?;
    let (offered_pps, connections, connected) = flooding;
    Ok(UnderFlood {
        paced: pace.is_some(),
        offered_pps,
        dropped_pps: dropped,
        passed_pps: passed,
        connections,
        connected,
        success_share: connected as f64 / connections.max(1) as f64,
        unknown_at_origin_pps,
        budget_pps: GLOBAL_BUDGET_PPS,
    })
}

fn probe() -> PathBuf {
    edge_bin().with_file_name("edge-probe")
}

/// One TCP connection from `src` (in the caller's namespace), closed at once.
fn tcp_connects(src: &str, to: &str, timeout_ms: u64) -> bool {
    let (Ok(src), Ok(to)) = (src.parse::<std::net::IpAddr>(), to.parse::<std::net::SocketAddr>())
    else {
        return false;
    };
    let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
    else {
        return false;
    };
    socket.bind(&std::net::SocketAddr::new(src, 0).into()).is_ok()
        && socket.connect_timeout(&to.into(), Duration::from_millis(timeout_ms)).is_ok()
}

fn connects(lab: &Lab, src: &str, timeout_ms: u32) -> Result<bool> {
    lab.connects(&probe(), src, 443, timeout_ms)
}

fn attach(lab: &Lab, policy: &Path) -> Result<()> {
    let mut cmd = lab.in_server(edge_bin());
    cmd.args(["attach", "--iface", &lab.server_if, "--xdp-mode", "native", "--policy"]).arg(policy);
    sh(cmd.stdout(Stdio::null())).map(|_| ())
}

fn detach(lab: &Lab) -> Result<()> {
    sh(lab.in_server(edge_bin()).args(["detach", "--iface", &lab.server_if]).stdout(Stdio::null()))
        .map(|_| ())
}

/// Frames an XDP program dropped on the server's veth (its driver counters).
fn xdp_drops(lab: &Lab) -> Result<u64> {
    let out = sh(Command::new("ip").args([
        "netns",
        "exec",
        &lab.server_ns,
        "ethtool",
        "-S",
        &lab.server_if,
    ]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.ends_with("xdp_drops"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

/// A program of the baseline object (`drop_all`, or `anchor_hash` with the whitelist in its
/// hash map) attached to the server's veth until dropped.
struct Reference {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Reference {
    fn attach(lab: &Lab, program: &'static str, whitelist: &[String]) -> Result<Self> {
        let (ns, iface) = (netns(&lab.server_ns), lab.server_if.clone());
        let keys: Vec<[u8; 4]> = whitelist
            .iter()
            .map(|a| a.parse::<std::net::Ipv4Addr>().map(|a| a.octets()))
            .collect::<Result<_, _>>()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let attached = (|| -> Result<aya::Ebpf> {
                enter(&ns)?;
                let mut ebpf = EbpfLoader::new()
                    .map_max_entries("anchor_v4", keys.len().max(1) as u32)
                    .load(BASELINE_OBJECT)?;
                let mut map: aya::maps::HashMap<_, [u8; 4], u8> =
                    aya::maps::HashMap::try_from(ebpf.map_mut("anchor_v4").context("anchor_v4")?)?;
                for k in &keys {
                    map.insert(k, 1, 0)?;
                }
                let prog: &mut Xdp = ebpf.program_mut(program).context(program)?.try_into()?;
                prog.load()?;
                prog.attach(&iface, aya::programs::XdpMode::Driver)?;
                Ok(ebpf)
            })();
            match attached {
                Ok(ebpf) => {
                    ready_tx.send(Ok(()))?;
                    let _ = stop_rx.recv();
                    drop(ebpf);
                    Ok(())
                }
                Err(e) => {
                    ready_tx.send(Err(e))?;
                    Ok(())
                }
            }
        });
        ready_rx.recv()??;
        Ok(Self { stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Unknown-source packets edge passed within the budgets.
fn edge_unknown_passed(lab: &Lab) -> Result<u64> {
    let stats = edge::pinned_stats(&lab.server_if)?;
    Ok(stats.applied(edge_common::reason::UNKNOWN_PASS).packets)
}

/// Packets edge dropped on the server interface, all reasons.
fn edge_drops(lab: &Lab) -> Result<u64> {
    let stats = edge::pinned_stats(&lab.server_if)?;
    Ok(stats.rows(true).iter().filter(|r| r.action == "drop").map(|r| r.packets).sum())
}

fn nft(lab: &Lab, args: &[&str]) -> Result<String> {
    sh(lab.in_server("nft").args(args))
}

fn nft_load(lab: &Lab, whitelist: &[String], dir: &Path) -> Result<()> {
    let rules = dir.join("whitelist.nft");
    let mut f = std::fs::File::create(&rules)?;
    writeln!(f, "table netdev edge_bench {{")?;
    writeln!(f, "  counter dropped {{ }}")?;
    writeln!(f, "  set whitelist {{ type ipv4_addr; size {}; elements = {{", whitelist.len() * 2)?;
    writeln!(f, "    {}", whitelist.join(",\n    "))?;
    writeln!(f, "  }} }}")?;
    writeln!(f, "  chain ingress {{")?;
    writeln!(
        f,
        "    type filter hook ingress device \"{}\" priority 0; policy accept;",
        lab.server_if
    )?;
    writeln!(f, "    ip saddr @whitelist accept")?;
    writeln!(f, "    udp dport 443 counter name dropped drop")?;
    writeln!(f, "    tcp dport 443 counter name dropped drop")?;
    writeln!(f, "  }}")?;
    writeln!(f, "}}")?;
    drop(f);
    nft(lab, &["-f", &rules.display().to_string()]).map(|_| ())
}

fn nft_drops(lab: &Lab) -> Result<u64> {
    let out = nft(lab, &["-j", "list", "counter", "netdev", "edge_bench", "dropped"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .context("no counter in `nft -j list counter`")
}

fn nft_clear(lab: &Lab) -> Result<()> {
    nft(lab, &["delete", "table", "netdev", "edge_bench"]).map(|_| ())
}

/// Keeps the CPUs out of their halt idle state while held (PM QoS: a 0 µs wake-up latency
/// request, as tuned's network-latency profile makes; closing the file withdraws it). A halted
/// vCPU is woken by the hypervisor tens of microseconds late, while the generator fills the
/// veth's 256-frame ring in a few: what overflows then measures the VM's wake-up, not the
/// filter, and the same for every filter compared.
struct NoIdleSleep {
    _request: Option<std::fs::File>,
}

impl NoIdleSleep {
    fn hold() -> Self {
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .and_then(|mut f| f.write_all(&0i32.to_ne_bytes()).map(|()| f));
        match held {
            Ok(f) => Self { _request: Some(f) },
            Err(e) => {
                say(&format!(
                    "cannot hold /dev/cpu_dma_latency ({e}): idle CPUs may halt, and rates be lower"
                ));
                Self { _request: None }
            }
        }
    }
}

/// The receiver: NAPI in a thread of its own, pinned to the receiver CPU, and GRO on (so the
/// veth takes XDP frames even without an XDP program, as under nftables).
fn receiver_setup(lab: &Lab) -> Result<()> {
    let iface = &lab.server_if;
    sh(Command::new("ip").args([
        "netns",
        "exec",
        &lab.server_ns,
        "ethtool",
        "-K",
        iface,
        "gro",
        "on",
    ]))?;
    sh(Command::new("ip").args([
        "netns",
        "exec",
        &lab.server_ns,
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{iface}/threaded"),
    ]))?;
    Ok(())
}

/// The NAPI threads of `iface` (they appear once NAPI is enabled, threaded).
fn napi_threads(iface: &str) -> Result<Vec<i32>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(&format!("napi/{iface}-")) {
            threads.push(pid);
        }
    }
    Ok(threads)
}

/// Pins every NAPI thread of `iface` to `cpu`. None is an error: the receiver would then run
/// in softirq on whichever CPU schedules it, the generator's, and the lab measure nothing real.
fn pin_napi_threads(iface: &str, cpu: usize) -> Result<()> {
    let threads = napi_threads(iface)?;
    if threads.is_empty() {
        bail!("no NAPI thread for {iface}: threaded NAPI is not on");
    }
    threads.into_iter().try_for_each(|pid| set_cpu(pid, cpu))
}

fn set_cpu(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for sched_setaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity({pid}, cpu {cpu}): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn netns(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into a network namespace.
fn enter(ns: &Path) -> Result<()> {
    let file = std::fs::File::open(ns)?;
    // SAFETY: a valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {}: {}", ns.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// The live-frames generator on the client's veth.
struct Generator {
    client_ns: PathBuf,
    client_if: String,
    server_if: String,
    /// The frames (IPv4, IPv6), behind `pad` bytes the generator strips before sending them.
    frame: Vec<u8>,
    frame_v6: Vec<u8>,
    pad: u32,
}

impl Generator {
    fn new(lab: &Lab) -> Result<Self> {
        let mac = |ns: &str, dev: &str| -> Result<[u8; 6]> {
            let out = sh(Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]))?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let text = v[0]["address"].as_str().context("no MAC address")?.to_string();
            let bytes: Vec<u8> =
                text.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
            bytes.try_into().map_err(|_| anyhow::anyhow!("bad MAC {text}"))
        };
        let mut frame = frame(UNKNOWN_SOURCE, L4::Udp(443)).payload_bytes(&[0u8; 18]).build();
        // No UDP checksum (allowed over IPv4): the random generator rewrites the source, and
        // what passes the filter must reach the origin's socket, not fail its checksum.
        frame[40..42].copy_from_slice(&[0, 0]);
        let mut frame_v6 = edge_tests::frames::frame("2001:db8::7", L4::Udp(443))
            .payload_bytes(&[0u8; 18])
            .build();
        let (server_mac, client_mac) =
            (mac(&lab.server_ns, &lab.server_if)?, mac(&lab.client_ns, &lab.client_if)?);
        for f in [&mut frame, &mut frame_v6] {
            f[0..6].copy_from_slice(&server_mac);
            f[6..12].copy_from_slice(&client_mac);
        }
        let mut gen = Self {
            client_ns: netns(&lab.client_ns),
            client_if: lab.client_if.clone(),
            server_if: lab.server_if.clone(),
            frame,
            frame_v6,
            pad: 0,
        };
        // A NIC driver starts packet data on a cache line; live-frames pages start it part-way
        // into one (after the kernel's page header), so a filter reading the Ethernet and IP
        // headers would touch two lines where a real receive touches one. Pad the frame so
        // that what is sent starts on a line.
        let address = gen.with_program("data_alignment", "alignment", u32::MAX, |run| {
            run(1)?;
            Ok(())
        })?;
        let offset = address % 64;
        gen.pad = ((64 - offset) % 64) as u32;
        gen.frame = [vec![0u8; gen.pad as usize], gen.frame].concat();
        gen.frame_v6 = [vec![0u8; gen.pad as usize], gen.frame_v6].concat();
        say(&format!(
            "generator: packet data starts {offset} bytes into a cache line; {} bytes of padding \
             stripped per frame",
            gen.pad
        ));
        Ok(gen)
    }

    /// CPU time the receiver's NAPI threads have run so far (their scheduler statistics).
    fn receiver_runtime(&self) -> Result<Duration> {
        let mut ns = 0u64;
        for pid in napi_threads(&self.server_if)? {
            let path = format!("/proc/{pid}/schedstat");
            let stat = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("{path}: no run time"))?;
        }
        Ok(Duration::from_nanos(ns))
    }

    /// Runs generator program `name` flat out for `secs` on the generator CPU; returns the
    /// frames per second it offered.
    fn run(&self, name: &str, secs: Duration) -> Result<f64> {
        self.run_at(name, secs, None)
    }

    /// As `run`, with only `share` (0..=1) of the runs transmitting: a smooth lower rate
    /// (pacing by sleeping between calls would send bursts that overflow the veth's ring).
    /// Returns the frames per second transmitted (counted by the program).
    fn run_at(&self, name: &str, secs: Duration, share: Option<f64>) -> Result<f64> {
        let share = share.unwrap_or(1.0).clamp(0.0, 1.0);
        let tx_share = if share >= 1.0 { u32::MAX } else { (share * f64::from(u32::MAX)) as u32 };
        let start = Instant::now();
        let sent = self.with_program(name, "generated", tx_share, |run| {
            // Each call has a setup cost (its page pool): make calls long.
            while start.elapsed() < secs {
                run(1 << 20)?;
            }
            Ok(())
        })?;
        Ok(sent as f64 / start.elapsed().as_secs_f64())
    }

    /// Loads generator program `name` in the client namespace, on the generator CPU, and calls
    /// `body` with a function that runs it for that many live frames. Returns the word in map
    /// `result` after: frames transmitted (`generated`), or the data address (`alignment`).
    fn with_program(
        &self,
        name: &str,
        result: &'static str,
        tx_share: u32,
        body: impl FnOnce(&mut dyn FnMut(u32) -> Result<()>) -> Result<()> + Send,
    ) -> Result<u64> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<u64> {
                enter(&self.client_ns)?;
                set_cpu(0, GENERATOR_CPU)?;
                pin_napi_threads(&self.server_if, RECEIVER_CPU)?;
                let mut ebpf = EbpfLoader::new()
                    .override_global("TX_SHARE", &tx_share, true)
                    .override_global("HEAD_PAD", &self.pad, true)
                    .load(BASELINE_OBJECT)?;
                let prog: &mut Xdp =
                    ebpf.program_mut(name).context(name.to_string())?.try_into()?;
                prog.load()?;
                let ifname = std::ffi::CString::new(self.client_if.as_str())?;
                // SAFETY: NUL-terminated name; in the client namespace now.
                let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex. data_end must be the frame's length; XDP_TX leaves through
                // the ingress interface.
                let frame = if name.ends_with("_v6") { &self.frame_v6 } else { &self.frame };
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                body(&mut |repeat| {
                    let mut opts = TestRunOptions::new();
                    opts.data_in = Some(frame);
                    opts.ctx_in = Some(&ctx);
                    opts.repeat = repeat;
                    opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
                    prog.test_run(opts).context("BPF_PROG_TEST_RUN (live frames)")?;
                    Ok(())
                })?;
                let word: aya::maps::Array<_, u64> =
                    aya::maps::Array::try_from(ebpf.map(result).context(result)?)?;
                Ok(word.get(&0, 0)?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))?
        })
    }
}

fn print(r: &Report) {
    println!(
        "\n== edge in the lab: drop rate for unknown sources (one run, median of {ROUNDS} rounds) =="
    );
    println!(
        "{:<15} {:<7} {:>12} {:>12} {:>9} {:>8}   every round",
        "filter", "sources", "offered pps", "dropped pps", "rx busy", "ns/drop"
    );
    for d in &r.drop_rates {
        let every: Vec<String> =
            d.rounds_dropped_pps.iter().map(|v| format!("{:.2}M", v / 1e6)).collect();
        println!(
            "{:<15} {:<7} {:>12.0} {:>12.0} {:>8.0}% {:>8.0}   {}",
            d.filter,
            d.sources,
            d.offered_pps,
            d.dropped_pps,
            d.receiver_busy * 100.0,
            d.receiver_ns_per_drop,
            every.join(" ")
        );
    }
    let row = |f: &str, sources: &str| {
        r.drop_rates.iter().find(|d| d.filter == f && d.sources == sources).cloned()
    };
    let rate = |f, sources| row(f, sources).map_or(0.0, |d| d.dropped_pps);
    let cost = |f, sources| row(f, sources).map_or(0.0, |d| d.receiver_ns_per_drop);
    for (sources, target) in [("single", 4.0), ("random", 2.5), ("random6", 2.5), ("botnet", 4.0)] {
        let nft = rate(NFTABLES, sources).max(1.0);
        println!(
            "{sources}: edge / nftables {:.2}x (target >= {target}x); the ceiling, drop-all / \
             nftables {:.2}x; one-lookup / nftables {:.2}x; edge / drop-all {:.2}; edge / \
             one-lookup {:.2}",
            rate(EDGE, sources) / nft,
            rate(CEILING, sources) / nft,
            rate(ONE_LOOKUP, sources) / nft,
            rate(EDGE, sources) / rate(CEILING, sources).max(1.0),
            rate(EDGE, sources) / rate(ONE_LOOKUP, sources).max(1.0)
        );
        println!(
            "{sources}: receiver CPU per dropped packet: nftables / edge {:.2}x; nftables / \
             one-lookup {:.2}x; edge / read-headers {:.2}x; edge / drop-all {:.2}x",
            cost(NFTABLES, sources) / cost(EDGE, sources).max(1e-9),
            cost(NFTABLES, sources) / cost(ONE_LOOKUP, sources).max(1e-9),
            cost(EDGE, sources) / cost(READ_HEADERS, sources).max(1e-9),
            cost(EDGE, sources) / cost(CEILING, sources).max(1e-9),
        );
    }
    println!(
        "random: edge / read-headers {:.2}x per drop (target <= 1.5x); random6: edge IPv6 / \
         edge IPv4 {:.2}x per drop (target <= 1.5x)",
        cost(EDGE, "random") / cost(READ_HEADERS, "random").max(1e-9),
        cost(EDGE, "random6") / cost(EDGE, "random").max(1e-9)
    );
    // The botnet's passes (a packet a second from each of 100 k sources) are stack work the
    // receiver's time includes; drop-all's receive cost plus edge's program time over
    // drop-all's is what edge's drops alone cost the receiver.
    let program = |f| row(f, "botnet").and_then(|d| d.program_ns_per_packet).unwrap_or(0.0);
    let edge_drop_only = cost(CEILING, "botnet") + program(EDGE) - program(CEILING);
    println!(
        "botnet (100 k fixed sources, each over a 1 pps budget): edge passed {:.0} pps within \
         the budgets and held {} per-source buckets (capacity {}: no eviction below it); \
         receiver per drop, passes' stack work included: edge / drop-all {:.2}x, nftables / \
         edge {:.2}x",
        r.botnet.passed_pps,
        r.botnet.buckets,
        r.botnet.capacity,
        cost(EDGE, "botnet") / cost(CEILING, "botnet").max(1e-9),
        cost(NFTABLES, "botnet") / cost(EDGE, "botnet").max(1e-9),
    );
    println!(
        "botnet, the programs' own time per packet: edge {:.1} ns, one-lookup {:.1}, \
         read-headers {:.1}, drop-all {:.1}; a drop's receive cost without the passes: edge \
         {:.0} ns = {:.2}x drop-all (target <= 1.5x), nftables / edge {:.2}x (target >= 4x)",
        program(EDGE),
        program(ONE_LOOKUP),
        program(READ_HEADERS),
        program(CEILING),
        edge_drop_only,
        edge_drop_only / cost(CEILING, "botnet").max(1e-9),
        cost(NFTABLES, "botnet") / edge_drop_only.max(1e-9),
    );
    for f in &r.under_flood {
        let how =
            if f.paced { "paced to 70% of edge's capacity" } else { "the generator's full rate" };
        println!("\n== under a random-source flood, {how} ==");
        println!(
            "generator sent {:.0} pps; edge dropped {:.0} pps and passed {:.0} unknown pps",
            f.offered_pps, f.dropped_pps, f.passed_pps
        );
        println!(
            "TCP connections from a visitor and an admitted client: {}/{} = {:.2}% (target >= \
             99.9%)",
            f.connected,
            f.connections,
            f.success_share * 100.0
        );
        println!(
            "unknown packets reaching the origin: {:.0} pps against a global budget of {} \
             ({:+.1}%, target within 5%)",
            f.unknown_at_origin_pps,
            f.budget_pps,
            (f.unknown_at_origin_pps / f64::from(f.budget_pps) - 1.0) * 100.0
        );
    }
}
