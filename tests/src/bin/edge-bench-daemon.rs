//! `cargo xtask bench`, control plane: cold start of 20M IPv4 visitors from the store, the day
//! roll with 20M visitors while packets run through the program, and the API's throughput and
//! acknowledgement-to-kernel latency through the real daemon on its Unix socket.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use edge::{
    api::{self, visitors_client::VisitorsClient},
    filter::{Maps, PIN_ROOT, XDP_PASS},
    history::VisitorHistory,
    store::{Op, Store},
    Day, Filter, Policy,
};
use edge_tests::{
    daemon::Daemon,
    frames::{frame, L4},
    lab::Lab,
};

const VISITORS: u32 = 20_000_000;
const WINDOW: u32 = 21;
const TODAY: &str = "2026-11-22";

/// The i-th visitor: multiplying by an odd constant permutes u32 (distinct, spread out).
fn visitor(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761)
}

struct Out {
    json: bool,
}

impl Out {
    fn say(&self, line: &str) {
        if !self.json {
            println!("{line}");
        }
    }

    fn case(&self, value: serde_json::Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("  {text}");
        }
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(pid: u32) -> Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("RssAnon:"), field("RssFile:")))
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let out = Out { json };
    let today = Day::parse(TODAY).map_err(anyhow::Error::msg)?;
    let first_day = Day(today.0 - (WINDOW - 1));

    // 20M visitors spread evenly over the 21 days of the window, written as the daemon would
    // (one log record) and compacted into a snapshot.
    out.say(&format!("control plane: {VISITORS} IPv4 visitors over {WINDOW} days"));
    let mut history = VisitorHistory::default();
    for day in 0..WINDOW {
        let mut keys: Vec<u32> = (day..VISITORS).step_by(WINDOW as usize).map(visitor).collect();
        history.v4.record_all(first_day.plus(day), &mut keys);
    }
    let lab = Lab::new(&[]).context("creating the namespace lab")?;
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], "mode = \"enforce\"\n", TODAY)?;
    let start = Instant::now();
    {
        let (mut store, _, _) = Store::open(&daemon.state_dir())?;
        store.append(&Op::visits(&history))?;
        let state = edge::store::State { history: history.clone(), ..Default::default() };
        store.compact(&state)?;
    }
    let snapshot_bytes = std::fs::metadata(daemon.state_dir().join("snapshot"))?.len();
    out.say(&format!(
        "  (store written in {:.1} s; snapshot {} MiB, {:.1} B/visitor)",
        start.elapsed().as_secs_f64(),
        snapshot_bytes >> 20,
        snapshot_bytes as f64 / f64::from(VISITORS)
    ));

    // Cold start in the library, step by step.
    out.say("\ncold start, library (store -> kernel maps):");
    let policy = Policy::parse("mode = \"enforce\"\n", "bench.toml", Path::new("."))?;
    let start = Instant::now();
    let (store, state, _) = Store::open(&daemon.state_dir())?;
    let open_s = start.elapsed().as_secs_f64();
    drop(store);
    let t = Instant::now();
    let mut filter = Filter::load()?;
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    filter.maps.apply(&policy, &state.history, today)?;
    let apply_s = t.elapsed().as_secs_f64();
    let total_s = start.elapsed().as_secs_f64();
    let kernel = filter.maps.kernel_bytes(edge_common::maps::VISITORS_V4)?;
    let per_visitor = kernel as f64 / f64::from(VISITORS);
    out.case(
        serde_json::json!({ "case": "cold_start_20m", "seconds": round3(total_s), "store_open_s": round3(open_s), "program_load_s": round3(load_s), "maps_fill_s": round3(apply_s), "kernel_bytes_per_visitor": round1(per_visitor) }),
        format!(
            "cold_start_20m         {total_s:.3} s (store {open_s:.3} + load {load_s:.3} + fill {apply_s:.3}), {per_visitor:.1} kernel B/visitor"
        ),
    );
    drop(state);

    // The day roll: D+20 -> D+21 moves the oldest day (1/21 of the visitors) out. Packets from
    // visitors that stay run through the program the whole time; none may be dropped.
    day_roll(&out, &mut filter, &history, today, "day_roll_20m", WINDOW)?;
    // Worst case: half of everyone leaves at once (a 2-day window over two days).
    let mut halves = VisitorHistory::default();
    for day in 0..2 {
        let mut keys: Vec<u32> = (day..VISITORS).step_by(2).map(visitor).collect();
        halves.v4.record_all(today.plus(day), &mut keys);
    }
    filter.maps.apply(&policy, &halves, today.plus(1))?;
    day_roll(&out, &mut filter, &halves, today.plus(1), "day_roll_10m_leave", 2)?;
    drop(halves);
    drop(filter);

    // The daemon process: spawn to SERVING, and its memory.
    out.say("\ncold start, daemon process (spawn -> health SERVING):");
    let start = Instant::now();
    daemon.start()?;
    wait_ready_fast(&daemon)?;
    let ready_s = start.elapsed().as_secs_f64();
    let (rss, anon, file) = rss_kib(daemon.pid().context("daemon pid")?)?;
    out.case(
        serde_json::json!({ "case": "daemon_cold_start_20m", "seconds": round3(ready_s), "rss_mib": rss / 1024, "rss_anon_mib": anon / 1024, "rss_file_mib": file / 1024 }),
        format!(
            "daemon_cold_start_20m  {ready_s:.3} s to SERVING; RSS {} MiB = {} MiB heap + {} MiB mapped (the kernel's bitmap, binary)",
            rss / 1024,
            anon / 1024,
            file / 1024
        ),
    );
    daemon.kill9()?;
    let start = Instant::now();
    daemon.start()?;
    wait_ready_fast(&daemon)?;
    let adopt_s = start.elapsed().as_secs_f64();
    out.case(
        serde_json::json!({ "case": "daemon_restart_adopt_20m", "seconds": round3(adopt_s) }),
        format!("daemon_restart_adopt   {adopt_s:.3} s to SERVING after kill -9 (pins adopted, maps reconciled)"),
    );

    api_throughput(&out, &daemon, &iface)?;
    relay_cost(&out)?;
    daemon.stop()?;
    edge::detach(&iface)?;
    drop(lab);
    admission_bench(&out)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn wait_ready_fast(daemon: &Daemon) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let run = daemon.cli(&["status", "--json"]);
        if run.code == 0 && run.stdout.contains("\"ready\": true") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!("the daemon was not ready in 60 s:\n{}", daemon.log())
}

/// Rolls `history` from `today` to the next day the way the daemon does (drop the day that
/// left, clear the bits of visitors seen only then) while another thread runs packets from
/// visitors that stay. Reports the roll time, mis-verdicts and per-packet times.
fn day_roll(
    out: &Out,
    filter: &mut Filter,
    history: &VisitorHistory,
    today: Day,
    case: &str,
    window: u32,
) -> Result<()> {
    let mut rolled = history.clone();
    let tomorrow = today.plus(1);
    // Visitors that stay: seen on the newest day.
    let newest = history.v4.get(today).context("a newest day")?;
    let stay: Vec<Vec<u8>> = newest
        .iter()
        .step_by((newest.len() / 2_000).max(1) as usize)
        .map(|a| frame(&Ipv4Addr::from(a).to_string(), L4::Tcp(443)).build())
        .collect();
    let bitmap = filter.maps.map_visitors_v4()?;
    let run = |filter: &mut Filter, frames: &[Vec<u8>], until: &dyn Fn() -> bool| {
        let (mut times, mut wrong, mut n) = (Vec::new(), 0u64, 0u64);
        'outer: loop {
            for f in frames {
                let (action, took) = filter.run(f, 1).expect("test run");
                times.push(took.as_nanos() as f64);
                n += 1;
                wrong += u64::from(action != XDP_PASS);
                if until() {
                    break 'outer;
                }
            }
        }
        (times, wrong, n)
    };
    // Baseline: the same packets, no roll.
    let (mut before, _, _) = {
        let deadline = Instant::now() + Duration::from_millis(300);
        run(filter, &stay, &|| Instant::now() > deadline)
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let (roll_s, expired, (mut during, wrong, packets)) = std::thread::scope(|s| {
        let roller = s.spawn(|| {
            let start = Instant::now();
            let expired = rolled.roll(tomorrow, window as u16);
            for addr in expired.v4.iter() {
                bitmap.remove(addr.into());
            }
            let took = start.elapsed().as_secs_f64();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (took, expired)
        });
        let during = run(filter, &stay, &|| done.load(std::sync::atomic::Ordering::Relaxed));
        let (took, expired) = roller.join().expect("roll thread");
        (took, expired, during)
    });
    // After the roll, those that left are gone from the kernel.
    let still = expired.v4.iter().step_by(997).filter(|a| bitmap.contains((*a).into())).count();
    anyhow::ensure!(still == 0, "{still} expired visitors still in the bitmap");
    let (b50, b99) = (percentile(&mut before, 0.5), percentile(&mut before, 0.99));
    let (d50, d99, dmax) =
        (percentile(&mut during, 0.5), percentile(&mut during, 0.99), percentile(&mut during, 1.0));
    out.case(
        serde_json::json!({ "case": case, "seconds": round3(roll_s), "visitors_leaving": expired.v4.len(), "packets_during": packets, "misverdicts": wrong, "ns_p50_before": b50, "ns_p99_before": b99, "ns_p50_during": d50, "ns_p99_during": d99, "ns_max_during": dmax }),
        format!(
            "{case:<22} {roll_s:.3} s, {} leave; {packets} packets of staying visitors during it: {wrong} mis-verdicts; ns/packet p50 {b50:.0} -> {d50:.0}, p99 {b99:.0} -> {d99:.0}, max {dmax:.0}",
            expired.v4.len()
        ),
    );
    Ok(())
}

/// RecordVisits in batches of 10,000 new visitors through the socket; after each answer, how
/// long until the batch's last address is visible in the pinned kernel bitmap.
fn api_throughput(out: &Out, daemon: &Daemon, iface: &str) -> Result<()> {
    out.say("\nAPI over the Unix socket (RecordVisits, batches of 10,000 new IPv4 visitors):");
    const BATCH: u32 = 10_000;
    const BATCHES: u32 = 100;
    let maps = Maps::open_pinned(&Path::new(PIN_ROOT).join(iface))?;
    let bitmap = maps.visitors_v4();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let channel = edge::client::connect(&daemon.socket).await?;
        let mut client = VisitorsClient::new(channel);
        let (mut call_ms, mut visible_us) = (Vec::new(), Vec::new());
        let start = Instant::now();
        for b in 0..BATCHES {
            // Addresses the store does not hold yet (above the 20M).
            let addrs: Vec<u32> = (0..BATCH).map(|i| visitor(VISITORS + b * BATCH + i)).collect();
            let visits = addrs
                .iter()
                .map(|a| api::Visit { ip: Ipv4Addr::from(*a).to_string(), day: String::new() })
                .collect();
            let t = Instant::now();
            client.record_visits(api::RecordVisitsRequest { visits }).await?;
            let acked = Instant::now();
            call_ms.push((acked - t).as_secs_f64() * 1e3);
            let last = Ipv4Addr::from(*addrs.last().unwrap());
            while !bitmap.contains(last) {
                anyhow::ensure!(acked.elapsed() < Duration::from_secs(1), "{last} never reached the kernel");
                std::hint::spin_loop();
            }
            visible_us.push(acked.elapsed().as_secs_f64() * 1e6);
        }
        let rate = f64::from(BATCH * BATCHES) / start.elapsed().as_secs_f64();
        let (c50, c99) = (percentile(&mut call_ms, 0.5), percentile(&mut call_ms, 0.99));
        let v99 = percentile(&mut visible_us, 0.99);
        out.case(
            serde_json::json!({ "case": "api_record_visits", "visits_per_second": rate.round(), "batch": BATCH, "call_ms_p50": round3(c50), "call_ms_p99": round3(c99), "ack_to_kernel_us_p99": round1(v99) }),
            format!(
                "api_record_visits      {rate:.0} visits/s; call p50 {c50:.1} ms, p99 {c99:.1} ms (each fsync'ed); ack -> kernel p99 {v99:.1} us (written before the answer)"
            ),
        );
        Ok(())
    })
}

/// What the Unix socket's `:authority` relay costs a call: the same gRPC health service served
/// on two sockets, one straight to tonic and one through `unix_relay`, called alternately in
/// rounds by one stock tonic client each (unary calls, so every call's headers are re-encoded).
fn relay_cost(out: &Out) -> Result<()> {
    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    out.say("\nUnix socket relay (gRPC health Check, unary; direct vs relayed, alternating):");
    const CALLS: usize = 2_000;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let serve = |relayed: bool| -> Result<std::path::PathBuf> {
            let path = dir.path().join(if relayed { "relayed.sock" } else { "direct.sock" });
            let listener = UnixListener::bind(&path)?;
            let (_, health) = tonic_health::server::health_reporter();
            let server = tonic::transport::Server::builder().add_service(health);
            if relayed {
                let incoming = edge::daemon::unix_relay::relay(listener);
                tokio::spawn(server.serve_with_incoming(incoming));
            } else {
                tokio::spawn(server.serve_with_incoming(UnixListenerStream::new(listener)));
            }
            Ok(path)
        };
        let mut clients = Vec::new();
        for relayed in [false, true] {
            clients.push(HealthClient::new(edge::client::connect(&serve(relayed)?).await?));
        }
        let mut micros = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (client, times) in clients.iter_mut().zip(micros.iter_mut()) {
                for _ in 0..CALLS {
                    let t = Instant::now();
                    client.check(HealthCheckRequest { service: String::new() }).await?;
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        let [direct, relayed] = &mut micros;
        let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
        let (r50, r99) = (percentile(relayed, 0.5), percentile(relayed, 0.99));
        out.case(
            serde_json::json!({ "case": "unix_relay_call", "direct_us_p50": round1(d50), "direct_us_p99": round1(d99), "relayed_us_p50": round1(r50), "relayed_us_p99": round1(r99), "ratio_p50": round3(r50 / d50) }),
            format!(
                "unix_relay_call        direct p50 {d50:.1} us, p99 {d99:.1} us; relayed p50 {r50:.1} us, p99 {r99:.1} us; relayed/direct p50 {:.2}",
                r50 / d50
            ),
        );
        Ok(())
    })
}

/// Tickets: verification in the daemon's code, admissions over gRPC and over a Redis Stream,
/// and how long each takes to reach the kernel's admitted map. A small daemon of its own.
fn admission_bench(out: &Out) -> Result<()> {
    use edge::{
        api::admissions_client::AdmissionsClient,
        ticket::{self, Key, Keyring},
        visitors::admission_key,
    };
    out.say("\nadmissions (tickets):");
    let ring = Keyring::new(vec![Key::new(1, [7; 16])]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mint = |first: u32, n: u32| -> Vec<(Ipv4Addr, String)> {
        (first..first + n)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0b00_0000 + i);
                (
                    ip,
                    ticket::encode(&ticket::issue(
                        ring.current(),
                        ip.into(),
                        now + 3600,
                        u64::from(i),
                    )),
                )
            })
            .collect()
    };

    // Verification alone (decode + SipHash + checks), as the daemon runs it per ticket.
    let texts = mint(0, 200_000);
    let start = Instant::now();
    for (ip, text) in &texts {
        ticket::verify(&ticket::decode(text)?, &ring, now, Some((*ip).into()))?;
    }
    let verify_rate = texts.len() as f64 / start.elapsed().as_secs_f64();
    out.case(
        serde_json::json!({ "case": "ticket_verify", "tickets_per_second": verify_rate.round() }),
        format!("ticket_verify          {verify_rate:.0} tickets/s on one core (decode, SipHash-2-4, checks)"),
    );

    let lab = Lab::new(&[])?;
    const PORT: &str = "6391";
    let mut redis = lab
        .in_server("redis-server")
        .args(["--port", PORT, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let iface = lab.server_if.clone();
    let policy = format!(
        "mode = \"enforce\"\n[admission]\nkeys = \"ticket.keys\"\nredis_url = \"redis://127.0.0.1:{PORT}\"\n"
    );
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy, TODAY)?;
    ring.create(&daemon.config_dir().join("ticket.keys"))?;
    daemon.start()?;
    wait_ready_fast(&daemon)?;
    let maps = std::sync::Mutex::new(Maps::open_pinned(&Path::new(PIN_ROOT).join(&iface))?);
    let admitted = |ip: Ipv4Addr| {
        let key = admission_key(ip.into());
        maps.lock().unwrap().admitted().is_ok_and(|m| m.get(&key, 0).is_ok())
    };

    // gRPC: Admit in batches of 10,000.
    const BATCH: u32 = 10_000;
    const BATCHES: u32 = 20;
    let runtime = tokio::runtime::Runtime::new()?;
    let (grpc_rate, grpc_p99_us) = runtime.block_on(async {
        let mut client = AdmissionsClient::new(edge::client::connect(&daemon.socket).await?);
        let mut visible = Vec::new();
        let start = Instant::now();
        for b in 0..BATCHES {
            let batch = mint(1_000_000 + b * BATCH, BATCH);
            let admissions = batch
                .iter()
                .map(|(_, t)| api::AdmissionTicket { ticket: t.clone(), ..Default::default() })
                .collect();
            client.admit(api::AdmitRequest { admissions }).await?;
            let acked = Instant::now();
            let last = batch.last().unwrap().0;
            while !admitted(last) {
                anyhow::ensure!(
                    acked.elapsed() < Duration::from_secs(1),
                    "{last} never reached the kernel"
                );
            }
            visible.push(acked.elapsed().as_secs_f64() * 1e6);
        }
        let rate = f64::from(BATCH * BATCHES) / start.elapsed().as_secs_f64();
        anyhow::Ok((rate, percentile(&mut visible, 0.99)))
    })?;
    out.case(
        serde_json::json!({ "case": "admit_grpc", "admissions_per_second": grpc_rate.round(), "batch": BATCH, "ack_to_kernel_us_p99": round1(grpc_p99_us) }),
        format!("admit_grpc             {grpc_rate:.0} admissions/s (batches of {BATCH}); ack -> kernel p99 {grpc_p99_us:.1} us"),
    );

    // Redis: 100,000 entries appended (pipelined) by a "queue service" in the namespace, then
    // single markers, each timed from XADD to the kernel's admitted map.
    const ENTRIES: u32 = 100_000;
    let backlog = mint(3_000_000, ENTRIES);
    let markers = mint(4_000_000, 50);
    let netns = format!("/run/netns/{}", lab.server_ns);
    let (redis_rate, redis_p99_ms) = std::thread::scope(|s| {
        s.spawn(|| -> Result<(f64, f64)> {
            let ns = std::fs::File::open(&netns)?;
            // SAFETY: valid fd; only this thread changes namespace.
            anyhow::ensure!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }
                    == 0
            );
            let client = redis::Client::open(format!("redis://127.0.0.1:{PORT}"))?;
            let mut con = client.get_connection()?;
            let start = Instant::now();
            for chunk in backlog.chunks(10_000) {
                let mut pipe = redis::pipe();
                for (_, t) in chunk {
                    pipe.cmd("XADD").arg("edge:admissions").arg("*").arg("ticket").arg(t).ignore();
                }
                pipe.query::<()>(&mut con)?;
            }
            let last = backlog.last().unwrap().0;
            while !admitted(last) {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(60),
                    "the backlog never reached the kernel"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let rate = f64::from(ENTRIES) / start.elapsed().as_secs_f64();
            let mut latency = Vec::new();
            for (ip, t) in &markers {
                let sent = Instant::now();
                redis::cmd("XADD")
                    .arg("edge:admissions")
                    .arg("*")
                    .arg("ticket")
                    .arg(t)
                    .query::<String>(&mut con)?;
                while !admitted(*ip) {
                    anyhow::ensure!(
                        sent.elapsed() < Duration::from_secs(5),
                        "{ip} never reached the kernel"
                    );
                    std::hint::spin_loop();
                }
                latency.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            Ok((rate, percentile(&mut latency, 0.99)))
        })
        .join()
        .expect("the redis thread")
    })?;
    out.case(
        serde_json::json!({ "case": "admit_redis", "admissions_per_second": redis_rate.round(), "xadd_to_kernel_ms_p99": round3(redis_p99_ms) }),
        format!("admit_redis            {redis_rate:.0} admissions/s (100k appended, pipelined); XADD -> kernel p99 {redis_p99_ms:.2} ms"),
    );
    daemon.stop()?;
    edge::detach(&iface)?;
    let _ = redis.kill();
    let _ = redis.wait();
    Ok(())
}
