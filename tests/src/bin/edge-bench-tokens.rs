//! `cargo xtask bench`, waiting rooms' tokens: verifications per second on one core for each
//! kind (tokens minted by tests/python/mint_tokens.py), side by side with edge's own ticket;
//! then the admission endpoint under load through the real daemon: browsers arriving on new
//! connections from distinct addresses, each with its own token, answered 302 once admitted.
//! Admissions per second, and each visit's latency (connect, request, answer) at p50 and p99.
use std::{
    net::Ipv4Addr,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use edge::{
    filter::{Maps, PIN_ROOT},
    ticket::{self, Key, Keyring},
    token::{Kind, Verifiers},
    visitors::admission_key,
    Policy,
};
use edge_tests::{daemon::Daemon, lab::Lab};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ISSUER: &str = "https://queue.example/api";
const AUDIENCE: &str = "evt-1";
const TODAY: &str = "2026-11-22";
/// Visits in each endpoint run, and how many are in flight at once in each.
const VISITS: usize = 30_000;
const CONCURRENCY: [usize; 3] = [16, 32, 64];

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let report = |value: serde_json::Value, text: String| {
        if json {
            println!("{value}");
        } else {
            println!("  {text}");
        }
    };

    // Verification alone, one core: every kind, the same run.
    say("tokens: verifications per second on one core (ratio: against edge's own ticket)".into());
    let dir = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mint_tokens.py");
    let minted = std::process::Command::new("python3")
        .arg(script)
        .args([dir.path().to_str().unwrap(), &now().to_string(), ISSUER, AUDIENCE, "sale1"])
        .output()
        .context("python3 tests/python/mint_tokens.py")?;
    anyhow::ensure!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    std::fs::write(
        dir.path().join("edge.toml"),
        format!(
            "[admission.queueit]\nsecret_file = \"queueit.secret\"\nevents = [\"sale1\"]\n\
             [admission.jwt]\njwks_file = \"jwks.json\"\nissuer = \"{ISSUER}\"\n\
             audience = \"{AUDIENCE}\"\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\", \"HS256\"]\n"
        ),
    )?;
    let policy = Policy::load(&dir.path().join("edge.toml"))?;
    let mut verifiers = Verifiers::from_settings(&policy.admission).map_err(anyhow::Error::msg)?;
    let ring = Keyring::new(vec![Key::new(1, [7; 16])]);
    verifiers.edge = Some(ring.clone());
    let ip: std::net::IpAddr = "192.0.2.30".parse()?;
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json"))?)?;
    let token = |name: &str| -> String {
        cases.iter().find(|c| c["name"] == name).unwrap()["token"].as_str().unwrap().into()
    };
    let edge_ticket = ticket::encode(&ticket::issue(ring.current(), ip, now() + 600, 1));
    let kinds = [
        ("edge_ticket", Kind::Edge, edge_ticket),
        ("queueit", Kind::Queueit, token("queueit valid")),
        ("jwt_hs256", Kind::Jwt, token("jwt HS256 valid")),
        ("jwt_rs256", Kind::Jwt, token("jwt RS256 valid")),
        ("jwt_es256", Kind::Jwt, token("jwt ES256 valid")),
        ("jwt_eddsa", Kind::Jwt, token("jwt EdDSA valid")),
    ];
    let mut edge_rate = 0.0;
    for (name, kind, token) in &kinds {
        let now = now();
        verifiers.verify(Some(*kind), token, Some(ip), now).map_err(anyhow::Error::new)?;
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < Duration::from_millis(400) {
            for _ in 0..100 {
                let ok = verifiers.verify(Some(*kind), token, Some(ip), now);
                std::hint::black_box(ok).map_err(anyhow::Error::new)?;
            }
            n += 100;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        if *name == "edge_ticket" {
            edge_rate = rate;
        }
        report(
            serde_json::json!({ "case": format!("verify_{name}"), "per_second": rate.round(), "cost_vs_edge_ticket": (edge_rate / rate * 10.0).round() / 10.0 }),
            format!(
                "verify_{name:<12} {rate:>10.0}/s  {:>6.1}x the cost of an edge ticket",
                edge_rate / rate
            ),
        );
    }

    endpoint_bench(&say, &report)
}

fn endpoint_bench(say: &dyn Fn(String), report: &dyn Fn(serde_json::Value, String)) -> Result<()> {
    say(format!(
        "\nadmission endpoint: {VISITS} browsers per run, each on a new connection from its own \
         address with its own HS256 JWT, {CONCURRENCY:?} at once"
    ));
    let lab = Lab::new(&[])?;
    let iface = lab.server_if.clone();
    let secret = [0x5au8; 32];
    let policy = format!(
        "mode = \"enforce\"\n[admission]\nmax_sources = 1\n\
         [admission.jwt]\njwks_file = \"hs.json\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         algorithms = [\"HS256\"]\n\
         [admission.http]\nlisten = \"127.0.0.1:18080\"\ntargets = [\"https://shop.example/\"]\n\
         source_pps = 1000000\nglobal_pps = 1000000\n"
    );
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy, TODAY)?;
    let jwks = serde_json::json!({ "keys": [{ "kty": "oct", "kid": "hs", "alg": "HS256",
        "k": base64_url(&secret) }] });
    let path = daemon.config_dir().join("hs.json");
    std::fs::write(&path, jwks.to_string())?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    daemon.start()?;
    daemon.wait_ready()?;

    let key = jsonwebtoken::EncodingKey::from_secret(&secret);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let exp = now() + 3600;
    let runs = CONCURRENCY.len();
    let tokens: Vec<String> = (0..VISITS * runs)
        .map(|i| {
            let claims = serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "exp": exp,
                "jti": format!("visit-{i}") });
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        })
        .collect();
    let tokens = Arc::new(tokens);
    for (run, concurrency) in CONCURRENCY.into_iter().enumerate() {
        endpoint_run(report, &lab, &iface, tokens.clone(), run * VISITS, concurrency)?;
    }
    daemon.stop()?;
    edge::detach(&iface)?;
    Ok(())
}

/// The `i`-th browser's address: distinct for every visit of every run.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn endpoint_run(
    report: &dyn Fn(serde_json::Value, String),
    lab: &Lab,
    iface: &str,
    tokens: Arc<Vec<String>>,
    first: usize,
    concurrency: usize,
) -> Result<()> {
    let netns = format!("/run/netns/{}", lab.server_ns);
    let (elapsed, mut latency, admitted) = std::thread::spawn(move || -> Result<_> {
        let ns = std::fs::File::open(&netns)?;
        // SAFETY: valid fd; only this thread changes namespace (the runtime's threads are
        // made after, from this one, and inherit it).
        anyhow::ensure!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } == 0
        );
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let next = Arc::new(AtomicUsize::new(first));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (next, tokens) = (next.clone(), tokens.clone());
                tasks.push(tokio::spawn(async move {
                    let mut times = Vec::new();
                    let mut found = 0usize;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= first + VISITS {
                            break;
                        }
                        let sent = Instant::now();
                        if visit(source(i), &tokens[i]).await? {
                            found += 1;
                        }
                        times.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    anyhow::Ok((times, found))
                }));
            }
            let mut latency = Vec::new();
            let mut admitted = 0;
            for task in tasks {
                let (times, found) = task.await??;
                latency.extend(times);
                admitted += found;
            }
            Ok((start.elapsed(), latency, admitted))
        })
    })
    .join()
    .expect("the load thread")?;
    anyhow::ensure!(admitted == VISITS, "{admitted} of {VISITS} visits got their 302");
    let mut maps = Maps::open_pinned(&Path::new(PIN_ROOT).join(iface))?;
    let last = admission_key(source(first + VISITS - 1).into());
    anyhow::ensure!(
        maps.admitted()?.get(&last, 0).is_ok(),
        "the last admission is not in the kernel's admitted map"
    );
    let rate = VISITS as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&mut latency, 0.5), percentile(&mut latency, 0.99));
    report(
        serde_json::json!({ "case": "endpoint_admit", "concurrency": concurrency, "admissions_per_second": rate.round(), "visit_ms_p50": (p50 * 100.0).round() / 100.0, "visit_ms_p99": (p99 * 100.0).round() / 100.0 }),
        format!(
            "endpoint_admit, {concurrency:>2} at once  {rate:>6.0} admissions/s; a visit (connect, GET, \
             302) p50 {p50:.2} ms, p99 {p99:.2} ms"
        ),
    );
    Ok(())
}

/// One browser: a new connection from `source`, `GET /admit` with its token; true on a 302.
async fn visit(source: Ipv4Addr, token: &str) -> Result<bool> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let mut stream = socket.connect(([127, 0, 0, 1], 18080).into()).await?;
    let request = format!(
        "GET /admit?target=https%3A%2F%2Fshop.example%2F&token={token} HTTP/1.1\r\n\
         Host: edge\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer.starts_with(b"HTTP/1.1 302"))
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
