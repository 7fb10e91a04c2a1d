//! `cargo xtask bench`, the fleet: real daemons in namespace labs sharing one real
//! redis-server. How long a visit recorded on node A takes to reach node B's kernel map; the
//! API's throughput on a fleet node beside a node alone (alternating rounds, one run), and how
//! fast the other node applies it; a new node joining a 20-million-visitor fleet from the
//! snapshot; and what Redis holds for it.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use edge::{
    api::{self, visitors_client::VisitorsClient},
    filter::{Maps, PIN_ROOT},
    fleet::{self, Keys, Kind},
    history::VisitorHistory,
    store::State,
    ticket::Keyring,
    Day,
};
use edge_tests::{
    daemon::Daemon,
    fleet::{redis_url, RedisNet, STREAM},
    lab::Lab,
};

const VISITORS: u32 = 20_000_000;
const WINDOW: u32 = 21;
/// Rounds of the throughput comparison, each 100 calls of 1,000 visits per node.
const ROUNDS: u32 = 6;
const CALLS: u32 = 100;
const BATCH: u32 = 1_000;

fn visitor(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn say(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("  {text}");
    }
}

fn node(lab: &Lab, n: Option<usize>, key: &Path) -> Result<Daemon> {
    let fleet = match n {
        Some(n) => format!(
            "[fleet]\nredis_url = \"{}\"\nnode = \"n{n}\"\nkey_file = \"fleet.keys\"\n\
             snapshot_interval_s = 86400\n",
            redis_url(n)
        ),
        None => String::new(),
    };
    let policy = format!("mode = \"enforce\"\n[unknown]\nrate_pps = 0\n{fleet}");
    let today = Day::today_utc().to_string();
    let daemon = Daemon::configure(lab, &[&lab.server_if], &policy, &today)?;
    std::fs::copy(key, daemon.config_dir().join("fleet.keys"))?;
    Ok(daemon)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        anyhow::ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    if !json {
        println!("fleet: daemons in namespace labs, one redis-server, TCP between them");
    }
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("fleet.keys");
    Keyring::generate()?.create(&key)?;
    let labs: Vec<Lab> = (0..4).map(|_| Lab::new(&[])).collect::<Result<_>>()?;
    let mut redis = RedisNet::new(&labs.iter().take(3).collect::<Vec<_>>());
    let redis_dir = tempfile::tempdir()?;
    redis.start(redis_dir.path());
    let mut a = node(&labs[0], Some(0), &key)?;
    let mut b = node(&labs[1], Some(1), &key)?;
    let mut alone = node(&labs[3], None, &key)?;
    for d in [&mut a, &mut b, &mut alone] {
        d.start()?;
        d.wait_ready()?;
    }
    for d in [&a, &b] {
        d.wait_status("in the fleet", |s| s["fleet"] == "ok")?;
    }
    let b_maps = Maps::open_pinned(&Path::new(PIN_ROOT).join(&labs[1].server_if))?;
    let b_bitmap = b_maps.visitors_v4();
    let runtime = tokio::runtime::Runtime::new()?;
    let (mut on_a, mut on_alone) = runtime.block_on(async {
        let a = VisitorsClient::new(edge::client::connect(&a.socket).await?);
        let alone = VisitorsClient::new(edge::client::connect(&alone.socket).await?);
        anyhow::Ok((a, alone))
    })?;
    let record = |client: &mut VisitorsClient<_>, addrs: &[u32]| {
        let visits = addrs
            .iter()
            .map(|a| api::Visit { ip: Ipv4Addr::from(*a).to_string(), day: String::new() })
            .collect();
        runtime.block_on(client.record_visits(api::RecordVisitsRequest { visits }))
    };

    // A visit acknowledged by A, until B's kernel map holds it.
    let mut latency_ms = Vec::new();
    for i in 0..200 {
        let addr = visitor(1_000_000_000 + i);
        record(&mut on_a, &[addr])?;
        let acked = Instant::now();
        wait_for("a visit reaching B", Duration::from_secs(10), || {
            b_bitmap.contains(Ipv4Addr::from(addr))
        })?;
        latency_ms.push(acked.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (p50, p99) = (percentile(&mut latency_ms, 0.5), percentile(&mut latency_ms, 0.99));
    say(
        json,
        serde_json::json!({ "case": "fleet_visit_a_to_b_kernel", "ms_p50": p50, "ms_p99": p99, "samples": 200 }),
        format!("fleet_visit_a_to_b     A's ack -> B's kernel map: p50 {p50:.1} ms, p99 {p99:.1} ms (200 visits)"),
    );

    // Throughput: the same calls to a fleet node and to a node alone, alternating rounds; and
    // how fast B holds what A took.
    let (mut fleet_rate, mut alone_rate, mut replicated) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for on_fleet in [true, false] {
            let base = 2_000_000_000 + round * CALLS * BATCH + u32::from(on_fleet) * 500_000_000;
            let start = Instant::now();
            for c in 0..CALLS {
                let addrs: Vec<u32> = (0..BATCH).map(|i| visitor(base + c * BATCH + i)).collect();
                let client = if on_fleet { &mut on_a } else { &mut on_alone };
                record(client, &addrs)?;
            }
            let took = start.elapsed().as_secs_f64();
            let rate = f64::from(CALLS * BATCH) / took;
            if on_fleet {
                fleet_rate.push(rate);
                let last = Ipv4Addr::from(visitor(base + CALLS * BATCH - 1));
                wait_for("B holding A's batch", Duration::from_secs(30), || {
                    b_bitmap.contains(last)
                })?;
                replicated.push(f64::from(CALLS * BATCH) / start.elapsed().as_secs_f64());
            } else {
                alone_rate.push(rate);
            }
        }
    }
    let median = |v: &mut Vec<f64>| percentile(v, 0.5);
    let (f, s, r) = (median(&mut fleet_rate), median(&mut alone_rate), median(&mut replicated));
    say(
        json,
        serde_json::json!({ "case": "fleet_api_throughput", "fleet_visits_per_s": f.round(), "alone_visits_per_s": s.round(), "fleet_over_alone": (f / s * 1000.0).round() / 1000.0, "replicated_to_b_visits_per_s": r.round(), "batch": BATCH }),
        format!(
            "fleet_api_throughput   fleet node {f:.0} visits/s vs node alone {s:.0} ({:.2}x); B holds them at {r:.0} visits/s (median of {ROUNDS} rounds, batches of {BATCH})",
            f / s
        ),
    );
    let stream_bytes: u64 = redis
        .query(|c| redis::cmd("MEMORY").arg("USAGE").arg(STREAM).arg("SAMPLES").arg(0).query(c))?;
    let stream_visits = 200 + u64::from(ROUNDS * CALLS * BATCH);
    let per_visit = stream_bytes as f64 / stream_visits as f64;
    say(
        json,
        serde_json::json!({ "case": "fleet_stream_bytes_per_visit", "bytes_per_visit": (per_visit * 10.0).round() / 10.0 }),
        format!("fleet_stream           {per_visit:.1} bytes of Redis per visit in the stream ({stream_visits} visits)"),
    );

    // A new node joins a fleet of 20M visitors: the snapshot in Redis, made as a node makes it.
    let today = Day::today_utc();
    let mut history = VisitorHistory::default();
    for day in 0..WINDOW {
        let mut keys: Vec<u32> = (day..VISITORS).step_by(WINDOW as usize).map(visitor).collect();
        history.v4.record_all(Day(today.0 - (WINDOW - 1) + day), &mut keys);
    }
    let state = State { history, ..Default::default() };
    let body = edge::store::encode_state(&state);
    drop(state);
    let ring = Keyring::load(&key)?;
    let covers: String = redis
        .query(|c| {
            redis::cmd("XREVRANGE")
                .arg(STREAM)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query::<edge_tests::fleet::Entries>(c)
        })?
        .first()
        .map(|(id, _)| id.clone())
        .context("the stream is empty")?;
    let writer = fleet::Writer { node: "n0".into(), incarnation: "bench".into() };
    let entry = fleet::seal(&ring, STREAM, &writer, Kind::Snapshot, &covers, body);
    let snapshot_bytes = entry.body.len();
    let used_before: u64 = used_memory(&redis)?;
    let fields = fleet::fields(&entry);
    redis.query(move |c| {
        redis::cmd("HSET").arg(Keys::new(STREAM).snapshot).arg(fields).query::<u64>(c)
    })?;
    let snapshot_in_redis = used_memory(&redis)?.saturating_sub(used_before);
    say(
        json,
        serde_json::json!({ "case": "fleet_snapshot_20m", "bytes": snapshot_bytes, "redis_bytes": snapshot_in_redis }),
        format!(
            "fleet_snapshot_20m     {} MiB encoded, {} MiB of Redis memory ({:.1} B/visitor)",
            snapshot_bytes >> 20,
            snapshot_in_redis >> 20,
            snapshot_in_redis as f64 / f64::from(VISITORS)
        ),
    );
    let mut c = node(&labs[2], Some(2), &key)?;
    let start = Instant::now();
    c.start()?;
    wait_for("C serving with the 20M visitors", Duration::from_secs(120), || {
        let run = c.cli(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout).is_ok_and(|s| {
            s["ready"] == true && s["visitors_v4"].as_u64() >= Some(u64::from(VISITORS))
        })
    })?;
    let join_s = start.elapsed().as_secs_f64();
    say(
        json,
        serde_json::json!({ "case": "fleet_join_20m", "seconds": (join_s * 1000.0).round() / 1000.0 }),
        format!("fleet_join_20m         {join_s:.2} s from an empty node's start to SERVING with all 20M visitors"),
    );
    for d in [&mut a, &mut b, &mut c, &mut alone] {
        d.stop()?;
    }
    for lab in &labs {
        edge::detach(&lab.server_if)?;
    }
    Ok(())
}

fn used_memory(redis: &RedisNet) -> Result<u64> {
    let info: String = redis.query(|c| redis::cmd("INFO").arg("memory").query(c))?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}
