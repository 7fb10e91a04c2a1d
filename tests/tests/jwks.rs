//! `[admission.jwt]` with `jwks_url`, through a real daemon and a real HTTP server (Python's
//! http.server) in the lab: the key set is fetched and used; a waiting room's new key is picked
//! up when a token names it; with the URL down the cached keys stay in use, across a restart
//! too (`edge token verify` falls back to the same cache); and once they are older than
//! `jwks_max_age_s` every JWT is refused (fail closed), visible in `edge status`.
use std::{path::Path, process::Command, time::Duration};

use edge::api::{self, admissions_client::AdmissionsClient};
use edge_tests::{daemon::Daemon, edge_bin, lab::Lab, poll_until, privileged, Run};
use tonic::Code;

const ISSUER: &str = "https://queue.example/api";
const AUDIENCE: &str = "evt-1";
const SOURCE: &str = "192.0.2.30";

/// The HTTP server, killed when the test ends however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn admit(token: &str) -> api::AdmitRequest {
    api::AdmitRequest {
        admissions: vec![api::AdmissionTicket {
            ticket: token.into(),
            ip: SOURCE.into(),
            kind: "jwt".into(),
        }],
    }
}

#[test]
fn keys_from_a_url_are_fetched_refreshed_cached_and_refused_once_too_old() {
    if !privileged("keys_from_a_url_are_fetched_refreshed_cached_and_refused_once_too_old") {
        return;
    }
    let lab = Lab::new(&[SOURCE]).expect("lab");
    let iface = lab.server_if.clone();
    let minted = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mint_tokens.py");
    let run = Command::new("python3")
        .arg(script)
        .args([minted.path().to_str().unwrap(), &now().to_string(), ISSUER, AUDIENCE, "sale1"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(minted.path().join("cases.json")).unwrap()).unwrap();
    let token = |name: &str| -> String {
        cases.iter().find(|c| c["name"] == name).unwrap()["token"].as_str().unwrap().into()
    };
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(minted.path().join("jwks.json")).unwrap()).unwrap();
    let served = tempfile::tempdir().unwrap();
    let serve = |kids: &[&str]| {
        let keys: Vec<_> = all["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
            .cloned()
            .collect();
        let tmp = served.path().join("jwks.tmp");
        std::fs::write(&tmp, serde_json::json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(tmp, served.path().join("jwks.json")).unwrap();
    };
    serve(&["rsa1"]);
    let server = Server(
        lab.in_server("python3")
            .args(["-m", "http.server", "18081", "--bind", "127.0.0.1", "--directory"])
            .arg(served.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let policy = format!(
        "mode = \"enforce\"\n[admission.jwt]\njwks_url = \"http://127.0.0.1:18081/jwks.json\"\n\
         jwks_refresh_s = 3600\njwks_max_age_s = 7200\nissuer = \"{ISSUER}\"\n\
         audience = \"{AUDIENCE}\"\nalgorithms = [\"RS256\", \"ES256\"]\n"
    );
    let today = edge::Day::today_utc();
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy, &today.to_string()).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon
        .wait_status("holding fetched keys", |s| {
            s["jwks"].as_str().is_some_and(|j| j.starts_with("ok (1 keys"))
        })
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = daemon.socket.clone();
    let call = |token: String| {
        let socket = socket.clone();
        runtime.block_on(async move {
            let channel = edge::client::connect(&socket).await.unwrap();
            AdmissionsClient::new(channel).admit(admit(&token)).await
        })
    };
    call(token("jwt RS256 valid")).expect("a token under the fetched key");

    // A new key at the URL: a token naming it is refused until the set is fetched again,
    // which the unknown kid itself asks for.
    serve(&["rsa1", "ec1"]);
    let es = token("jwt ES256 valid");
    let first = call(es.clone()).expect_err("ec1 is not known yet");
    assert!(first.message().contains("unknown_kid"), "{first:?}");
    assert!(
        poll_until(Duration::from_secs(20), || call(es.clone()).is_ok()),
        "the new key was never picked up; log:\n{}",
        daemon.log()
    );

    // The URL down: the cached keys stay in use, across a restart too.
    drop(server);
    daemon.stop().unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.wait_log("cached key set read", 1);
    call(es.clone()).expect("the cached keys after a restart with the URL down");
    let status = daemon.cli(&["status"]).ok("status");
    assert!(
        status.contains("jwt keys: ok (2 keys") && status.contains("last fetch failed"),
        "{status}"
    );
    // The operator's tool: the URL unreachable from here too, the daemon's cache is used.
    let config = daemon.config_dir().join("edge.toml");
    let run = Run::of(Command::new(edge_bin()).args([
        "token",
        "verify",
        &es,
        "--config",
        config.to_str().unwrap(),
        "--ip",
        SOURCE,
    ]));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("using the daemon's cached keys"), "{}", run.stderr);

    // Past jwks_max_age_s (the daemon's clock a day on): every JWT is refused, and says why.
    daemon.set_today(&today.plus(1).to_string()).unwrap();
    let stale = call(token("jwt RS256 valid")).expect_err("keys too old");
    assert_eq!(stale.code(), Code::Unavailable, "{stale:?}");
    assert!(stale.message().contains("keys_stale"), "{stale:?}");
    let status = daemon.cli(&["status"]).ok("status");
    assert!(status.contains("jwt keys: stale"), "{status}");
}
