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
//!
//! `--only single,random,random6,botnet` measures only those floods in part 1 and skips part
//! 2: a change's before and after in minutes instead of a quarter of an hour.
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
use aya::{programs::Xdp, EbpfLoader};
use edge_tests::BASELINE_OBJECT;
use edge_tests::{
    edge_bin,
    generator::{
        enter, lab_visitor, netns, receiver_setup, set_cpu, tcp_connects, Generator, NoIdleSleep,
        GENERATOR_CPU, LAB_VISITORS,
    },
    lab::{sh, Lab},
};

const VISITOR: &str = "192.0.2.10";
const ADMITTED: &str = "192.0.2.20";
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let only = match args.iter().position(|a| a == "--only") {
        Some(at) => {
            let list =
                args.get(at + 1).context("--only needs a list: single,random,random6,botnet")?;
            Some(list.split(',').map(str::to_owned).collect::<Vec<_>>())
        }
        None => None,
    };
    let floods: Vec<(&str, &str)> = match &only {
        Some(kinds) => {
            if let Some(bad) = kinds.iter().find(|k| !FLOODS.iter().any(|(_, s)| s == k)) {
                bail!("--only: no flood {bad:?} (single, random, random6 or botnet)");
            }
            FLOODS.iter().copied().filter(|(_, s)| kinds.iter().any(|k| k == s)).collect()
        }
        None => FLOODS.to_vec(),
    };
    let report = run(&floods, only.is_none()).context("the lab benchmark")?;
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

/// Part 1 under `floods`; part 2 too if `connections`.
fn run(floods: &[(&'static str, &'static str)], connections: bool) -> Result<Report> {
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
    let whitelist: Vec<String> = (0..LAB_VISITORS)
        .map(|i| lab_visitor(i).to_string())
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
            rounds.extend(measure(&gen, CEILING, Some("drop_all"), floods, || xdp_drops(&lab))?);
        }
        // The same, reading the header a filter must read.
        {
            let _headers = Reference::attach(&lab, "read_headers", &[])?;
            rounds.extend(measure(&gen, READ_HEADERS, Some("read_headers"), floods, || {
                xdp_drops(&lab)
            })?);
        }
        // The yardstick: a one-lookup XDP whitelist (a preallocated hash map), native.
        {
            let _anchor = Reference::attach(&lab, "anchor_hash", &whitelist)?;
            rounds.extend(measure(&gen, ONE_LOOKUP, Some("anchor_hash"), floods, || {
                xdp_drops(&lab)
            })?);
        }
        // edge, native XDP: no budget for unknown sources, then the botnet with budgets.
        let (botnet_flood, plain): (Vec<_>, Vec<_>) =
            floods.iter().copied().partition(|(_, sources)| *sources == "botnet");
        if !plain.is_empty() {
            attach(&lab, &policy)?;
            rounds.extend(measure(&gen, EDGE, Some("edge"), &plain, || edge_drops(&lab))?);
            detach(&lab)?;
        }
        if !botnet_flood.is_empty() {
            attach(&lab, &botnet_policy)?;
            let passed_before = edge_unknown_passed(&lab)?;
            let botnet = measure(&gen, EDGE, Some("edge"), &botnet_flood, || edge_drops(&lab))?;
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
        }
        // nftables: the same whitelist as a set, at netdev ingress on the same interface.
        nft_load(&lab, &whitelist, dir.path())?;
        rounds.extend(measure(&gen, NFTABLES, None, floods, || nft_drops(&lab))?);
        nft_clear(&lab)?;
    }
    let drop_rates = medians(rounds);
    botnets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let botnet = botnets.get(botnets.len() / 2).map(|b| b.1.clone()).unwrap_or_default();
    if !connections {
        return Ok(Report { drop_rates, botnet, under_flood: Vec::new() });
    }

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
    let measured = |sources| row(EDGE, sources).is_some();
    for (sources, target) in [("single", 4.0), ("random", 2.5), ("random6", 2.5), ("botnet", 4.0)] {
        if !measured(sources) {
            continue;
        }
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
    if measured("random") && measured("random6") {
        println!(
            "random: edge / read-headers {:.2}x per drop (target <= 1.5x); random6: edge IPv6 / \
             edge IPv4 {:.2}x per drop (target <= 1.5x)",
            cost(EDGE, "random") / cost(READ_HEADERS, "random").max(1e-9),
            cost(EDGE, "random6") / cost(EDGE, "random").max(1e-9)
        );
    }
    if !measured("botnet") {
        return print_under_flood(r);
    }
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
    print_under_flood(r);
}

fn print_under_flood(r: &Report) {
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
