//! What ops load beside the daemon: the alert rules (packaging/prometheus/edge.rules.yml) pass
//! `promtool check rules`, and their unit tests (edge.rules.test.yml) fire and resolve every
//! alert on synthetic series with `promtool test rules`; every metric the rules and the Grafana
//! dashboard (packaging/grafana/edge.json) query is one a running daemon really exports.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use edge_tests::{daemon::Daemon, lab::Lab, privileged};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("packaging/prometheus"))
        .output()
        .expect("promtool (installed by `cargo xtask setup` with the prometheus package)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `edge_*` metric names a query text names.
fn metrics_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("edge_") {
        let start = at + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        at = end;
    }
    names
}

fn alert_rules() -> String {
    std::fs::read_to_string(repo().join("packaging/prometheus/edge.rules.yml")).unwrap()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("packaging/grafana/edge.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard with its panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has a query").to_string())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_fire_and_resolve_in_their_unit_tests() {
    let checked = promtool(&["check", "rules", "edge.rules.yml"]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "edge.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert has a unit test that fires it and one that sees it resolved.
    let tests =
        std::fs::read_to_string(repo().join("packaging/prometheus/edge.rules.test.yml")).unwrap();
    for line in alert_rules().lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let tested = tests.matches(&format!("alertname: {line}")).count();
        assert_eq!(tested, 2, "{line}: one firing and one resolved evaluation");
    }
}

#[test]
fn the_rules_and_the_dashboard_query_only_metrics_a_daemon_exports() {
    if !privileged("the_rules_and_the_dashboard_query_only_metrics_a_daemon_exports") {
        return;
    }
    let mut lab = Lab::new(&[]).expect("lab");
    let iface = lab.server_if.clone();
    // A daemon with every feature whose metrics the rules and the dashboard read: the feed and
    // the fleet (their Redis unreachable: degraded, still reported), a JWKS URL (served here),
    // a Queue-it verifier and the endpoint.
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(
        keys.path().join("jwks.json"),
        r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#,
    )
    .unwrap();
    let mut serve = lab.in_server("python3");
    serve
        .args(["-m", "http.server", "18082", "--bind", "127.0.0.1", "--directory"])
        .arg(keys.path());
    serve.stdout(Stdio::null()).stderr(Stdio::null());
    lab.spawn(serve).unwrap();
    let policy = "mode = \"auto\"\n[admission]\nredis_url = \"redis://127.0.0.1:1\"\n\
                  [admission.queueit]\nsecret_file = \"q.secret\"\nevents = [\"e\"]\n\
                  [admission.jwt]\njwks_url = \"http://127.0.0.1:18082/jwks.json\"\n\
                  issuer = \"i\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n\
                  [admission.http]\nlisten = \"127.0.0.1:18083\"\ntargets = [\"https://a.example/\"]\n\
                  [fleet]\nredis_url = \"redis://127.0.0.1:1\"\nnode = \"n1\"\nkey_file = \"fleet.keys\"\n";
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, &today).unwrap();
    let dir = daemon.config_dir().to_path_buf();
    let secret = dir.join("q.secret");
    std::fs::write(&secret, "a-queue-it-secret-of-32-bytes-ok\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    daemon.cli(&["key", "generate", "--out", dir.join("fleet.keys").to_str().unwrap()]).ok("key");
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon
        .wait_status("holding the JWKS", |s| {
            s["jwks"].as_str().is_some_and(|j| j.starts_with("ok"))
        })
        .unwrap();
    let body = lab.scrape_metrics();
    let exported: BTreeSet<String> = body
        .lines()
        .filter(|l| l.starts_with("edge_"))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let mut queried = metrics_named(&alert_rules());
    for query in dashboard_queries() {
        queried.extend(metrics_named(&query));
    }
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {exported:?}");
}
