//! The admission endpoint end to end, in the namespace lab: a browser from an unknown source is
//! dropped on tcp/443; it fetches `GET /admit` with a waiting room's token (minted by
//! tests/python/mint_tokens.py) with Python's own HTTP client, gets the 302 to its target, and
//! then connects on tcp/443. The same token from a second source gets 403 and stays dropped,
//! also after a restart (the replay state is stored); a forged token and a target off the
//! allow-list admit nothing. Over HTTP, then HTTPS, with the token in the query, a cookie or
//! `Authorization: Bearer`.
use std::path::Path;

use edge_tests::{daemon::Daemon, lab::Lab, privileged, probe};

const BROWSER: &str = "192.0.2.30";
const SECOND: &str = "192.0.2.31";
const FORGER: &str = "192.0.2.32";
const COOKIE_USER: &str = "192.0.2.33";
const LATE_USER: &str = "192.0.2.34";
/// A forged source: configured nowhere, so the server's answers go nowhere.
const FLOODER: &str = "198.18.77.7";
const ISSUER: &str = "https://queue.example/api";
const AUDIENCE: &str = "evt-1";
const EVENT: &str = "sale1";
const TARGET: &str = "https://shop.example/cart?item=7";

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    token: String,
}

#[derive(serde::Deserialize, Debug)]
struct Answer {
    status: u16,
    location: String,
    body: String,
}

fn packets(daemon: &Daemon, reason: &str) -> u64 {
    let out = daemon.cli(&["stats", "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter().filter(|r| r["reason"] == reason).map(|r| r["packets"].as_u64().unwrap()).sum()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn policy(http: &str) -> String {
    format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n\
         [admission]\nmax_sources = 1\n\
         [admission.queueit]\nsecret_file = \"queueit.secret\"\nevents = [\"{EVENT}\"]\n\
         [admission.jwt]\njwks_file = \"jwks.json\"\nissuer = \"{ISSUER}\"\n\
         audience = \"{AUDIENCE}\"\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\", \"HS256\"]\n\
         [admission.http]\n{http}targets = [\"https://shop.example/\"]\n"
    )
}

/// A visit to the endpoint from `source`: `how` is `?name=token` appended to the query, or
/// the client's `--cookie`/`--bearer` options.
fn visit(lab: &Lab, source: &str, url: &str, extra: &[&str]) -> Answer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/admit_client.py");
    let out =
        lab.in_client("python3").arg(script).args([source, url]).args(extra).output().unwrap();
    assert!(out.status.success(), "admit_client.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_browser_with_a_waiting_rooms_token_is_admitted_through_the_endpoint_and_no_one_else() {
    if !privileged(
        "a_browser_with_a_waiting_rooms_token_is_admitted_through_the_endpoint_and_no_one_else",
    ) {
        return;
    }
    let mut lab = Lab::new(&[BROWSER, SECOND, FORGER, COOKIE_USER, LATE_USER]).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    let today = edge::Day::today_utc().to_string();
    let http = "listen = \"192.0.2.1:8080\"\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy(http), &today).unwrap();
    let dir = daemon.config_dir().to_path_buf();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mint_tokens.py");
    let minted = std::process::Command::new("python3")
        .arg(script)
        .args([dir.to_str().unwrap(), &now().to_string(), ISSUER, AUDIENCE, EVENT])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let token = |name: &str| cases.iter().find(|c| c.name == name).unwrap().token.clone();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let connects = |src: &str| lab.connects(probe(), src, 443, 700).unwrap();
    let base = "http://192.0.2.1:8080/admit";
    let with = |name: &str, token: &str, target: &str| {
        format!("{base}?target={}&{name}={}", encode(target), encode(token))
    };

    // Unknown: dropped. With a valid token: 302 to the target, then through.
    let jwt = token("jwt RS256 valid");
    assert!(!connects(BROWSER), "not admitted yet");
    let answer = visit(&lab, BROWSER, &with("token", &jwt, TARGET), &[]);
    assert_eq!((answer.status, answer.location.as_str()), (302, TARGET), "{answer:?}");
    assert!(connects(BROWSER), "admitted by the endpoint");

    // The same token from a second source: 403, still dropped.
    let answer = visit(&lab, SECOND, &with("token", &jwt, TARGET), &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.contains("replayed"), "{answer:?}");
    assert!(!connects(SECOND));
    // The first source again: still its admission (a reload of the page is no replay).
    assert_eq!(visit(&lab, BROWSER, &with("token", &jwt, TARGET), &[]).status, 302);

    // A forged token, a target off the list, no token: 403 and nothing admitted.
    let forged = token("jwt HS256 signed with the RSA public key");
    let answer = visit(&lab, FORGER, &with("token", &forged, TARGET), &[]);
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("alg_key_mismatch"), "{answer:?}");
    let queueit = token("queueit valid");
    for target in ["https://evil.example/", "https://shop.example.evil.net/", "javascript:x"] {
        let answer = visit(&lab, FORGER, &with("queueittoken", &queueit, target), &[]);
        assert_eq!(answer.status, 403, "{target}: {answer:?}");
        assert!(answer.body.contains("bad_target"), "{answer:?}");
    }
    let answer = visit(&lab, FORGER, &format!("{base}?target={}", encode(TARGET)), &[]);
    assert!(answer.status == 403 && answer.body.contains("no_token"), "{answer:?}");
    assert!(!connects(FORGER), "nothing forged or misdirected admitted anyone");
    assert_eq!(visit(&lab, FORGER, "http://192.0.2.1:8080/other", &[]).status, 404);

    // The kernel bounds what reaches the endpoint: a source flooding its port (forged SYNs:
    // they cannot be answered) is cut at its own budget, and a browser on another address
    // still gets through.
    let passed = packets(&daemon, "endpoint_pass");
    assert!(passed > 0, "the endpoint's traffic is judged by its own stage");
    for _ in 0..60 {
        let status = lab
            .in_client(probe())
            .args(["spoof", "--from", FLOODER, "--to", "192.0.2.1:8080", "--flag", "syn"])
            .status()
            .unwrap();
        assert!(status.success(), "spoof");
    }
    assert!(packets(&daemon, "endpoint_rate") >= 15, "the flood was cut at its budget");
    let ed = token("jwt ES256 valid");
    let answer = visit(&lab, COOKIE_USER, &with("token", &ed, TARGET), &[]);
    assert_eq!(answer.status, 302, "a browser during the flood: {answer:?}");
    assert!(connects(COOKIE_USER));

    // Counted by kind and reason.
    let metrics = lab.scrape_metrics();
    for line in [
        "edge_tokens_refused_total{kind=\"jwt\",reason=\"replayed\"} 1",
        "edge_tokens_refused_total{kind=\"jwt\",reason=\"alg_key_mismatch\"} 1",
        "edge_tokens_admitted_total{kind=\"jwt\"} 3",
        "edge_admission_endpoint_requests_total{outcome=\"admitted\"} 3",
        "edge_admission_endpoint_requests_total{outcome=\"bad_target\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // HTTPS, after a restart: the replay state was stored, and the cookie and the bearer
    // header carry tokens too.
    daemon.stop().unwrap();
    let pki = edge_tests::tls::Pki::for_server(&dir, &["192.0.2.1"]);
    let https = format!(
        "listen = \"192.0.2.1:8443\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let config = std::fs::read_to_string(dir.join("edge.toml")).unwrap();
    std::fs::write(dir.join("edge.toml"), config.replace(http, &https)).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let base = "https://192.0.2.1:8443/admit";
    let ca = ["--ca", pki.ca.to_str().unwrap()];
    let target = format!("{base}?target={}", encode(TARGET));
    let answer = visit(&lab, SECOND, &format!("{target}&token={}", encode(&jwt)), &ca);
    assert!(answer.status == 403 && answer.body.contains("replayed"), "{answer:?}");
    assert!(!connects(SECOND), "still refused after the restart");
    let cookie = format!("queueittoken={queueit}");
    let answer = visit(&lab, LATE_USER, &target, &[&ca[..], &["--cookie", &cookie]].concat());
    assert_eq!((answer.status, answer.location.as_str()), (302, TARGET), "{answer:?}");
    assert!(connects(LATE_USER), "admitted through HTTPS with a cookie");
    let bearer = token("jwt EdDSA valid");
    let answer = visit(&lab, SECOND, &target, &[&ca[..], &["--bearer", &bearer]].concat());
    assert_eq!(answer.status, 302, "{answer:?}");
    assert!(connects(SECOND), "admitted with its own token");
    assert!(!connects(FORGER));
}
