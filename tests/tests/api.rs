//! The API contract, through gRPC clients generated from the checked-in .proto: health only
//! SERVING once the filter is attached, every documented status code reached and asserted,
//! paging, bounded requests, a slow client not blocking others, the TCP listener's token,
//! and server reflection.
use std::{path::Path, time::Duration};

use edge::api::{
    self, control_client::ControlClient, rules_client::RulesClient, visitors_client::VisitorsClient,
};
use edge::client::ApiChannel;
use edge_tests::{daemon::Daemon, lab::Lab, privileged, tls::Pki};
use tonic::{
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
    Code,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

const TOKEN: &str = "0123456789abcdef-test-token";
const TCP: &str = "127.0.0.1:7707";

async fn channel(socket: &Path) -> ApiChannel {
    for _ in 0..100 {
        if let Ok(channel) = edge::client::connect(socket).await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon never listened on {}", socket.display());
}

async fn health(channel: &ApiChannel) -> ServingStatus {
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let answer = HealthClient::new(channel.clone()).check(request).await.unwrap().into_inner();
    answer.status()
}

/// Asserts a call failed with `code` and a message containing every `words`.
fn fails<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &[&str]) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    for word in words {
        assert!(status.message().contains(word), "`{word}` not in {:?}", status.message());
    }
}

fn visit(ip: &str, day: &str) -> api::Visit {
    api::Visit { ip: ip.into(), day: day.into() }
}

fn record(visits: Vec<api::Visit>) -> api::RecordVisitsRequest {
    api::RecordVisitsRequest { visits }
}

fn import_message(chunk: &str, first: bool) -> api::ImportVisitorsRequest {
    api::ImportVisitorsRequest {
        format: if first { "csv".into() } else { String::new() },
        file_name: if first { "f.csv".into() } else { String::new() },
        chunk: chunk.as_bytes().to_vec(),
    }
}

#[test]
fn the_api_contract() {
    if !privileged("the_api_contract") {
        return;
    }
    let mut lab = Lab::new(&[]).expect("creating the namespace lab");
    // The interface does not exist yet: the daemon must wait, NOT_SERVING, and refuse changes.
    let late = format!("l{}", lab.server_if);
    lab.clean_pins_of(&late);
    let mut daemon = Daemon::configure_with(
        &lab,
        &[&late],
        "mode = \"monitor\"\n[lists]\ndeny = [\"203.0.113.0/24\"]\n",
        "2026-11-22",
        &format!(
            "tcp_listen = \"{TCP}\"\ntoken_file = \"token\"\ntls_cert = \"server.pem\"\n\
             tls_key = \"server.key\"\ntls_client_ca = \"ca.pem\""
        ),
    )
    .unwrap();
    let pki = Pki::new(daemon.config_dir());
    let token_file = daemon.config_dir().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    daemon.start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    runtime.block_on(async {
        let channel = channel(&daemon.socket).await;
        assert_eq!(health(&channel).await, ServingStatus::NotServing);
        let mut control = ControlClient::new(channel.clone());
        let mut visitors = VisitorsClient::new(channel.clone());
        let status = control.get_status(api::GetStatusRequest {}).await.unwrap().into_inner();
        assert!(!status.ready);
        assert!(status.interfaces[0].state.contains("no such network interface"), "{status:?}");
        fails(
            visitors.record_visits(record(vec![visit("192.0.2.1", "")])).await,
            Code::Unavailable,
            &[&late, "nothing was changed"],
        );
        fails(control.get_stats(api::GetStatsRequest::default()).await, Code::Unavailable, &[]);
        // Reads do not need the filter.
        let count = visitors.count_visitors(api::CountVisitorsRequest {}).await.unwrap();
        assert_eq!(count.into_inner().total, 0);
    });

    edge_tests::lab::sh(
        std::process::Command::new("ip")
            .args(["-n", &lab.server_ns, "link", "add", &late, "type", "veth", "peer", "name"])
            .arg(format!("p{late}")),
    )
    .unwrap();
    edge_tests::lab::sh(std::process::Command::new("ip").args([
        "-n",
        &lab.server_ns,
        "link",
        "set",
        &late,
        "up",
    ]))
    .unwrap();
    daemon.wait_ready().unwrap();

    runtime.block_on(async {
        let channel = channel(&daemon.socket).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while health(&channel).await != ServingStatus::Serving {
            assert!(std::time::Instant::now() < deadline, "health never turned SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut control = ControlClient::new(channel.clone());
        let mut visitors = VisitorsClient::new(channel.clone());
        let mut rules = RulesClient::new(channel.clone());

        // INVALID_ARGUMENT names the field and the value (or the file and line).
        fails(
            visitors
                .record_visits(record(vec![visit("192.0.2.1", ""), visit("300.1.1.1", "")]))
                .await,
            Code::InvalidArgument,
            &["visits[1].ip", "300.1.1.1"],
        );
        fails(
            visitors.record_visits(record(vec![visit("192.0.2.1", "2026-11-23")])).await,
            Code::InvalidArgument,
            &["visits[0].day", "after today"],
        );
        let too_many = (0..100_001)
            .map(|i| visit(&format!("10.1.{}.{}", i / 256 % 256, i % 256), ""))
            .collect();
        fails(
            visitors.record_visits(record(too_many)).await,
            Code::InvalidArgument,
            &["at most 100000"],
        );
        fails(
            control.set_mode(api::SetModeRequest { mode: "block".into() }).await,
            Code::InvalidArgument,
            &["mode", "block"],
        );
        let bad_rule =
            api::Rule { list: "deny".into(), cidr: "10.0.0.1/8".into(), ..Default::default() };
        fails(
            rules.add_rules(api::AddRulesRequest { rules: vec![bad_rule] }).await,
            Code::InvalidArgument,
            &["rules[0].cidr", "host bits"],
        );
        fails(
            visitors
                .list_visitors(api::ListVisitorsRequest {
                    page_size: 20_000,
                    page_token: String::new(),
                })
                .await,
            Code::InvalidArgument,
            &["page_size"],
        );
        fails(
            visitors
                .list_visitors(api::ListVisitorsRequest {
                    page_size: 10,
                    page_token: "bogus".into(),
                })
                .await,
            Code::InvalidArgument,
            &["page_token"],
        );
        // An import with a bad third line changes nothing, not even its two good lines.
        let lines = ["192.0.2.1\n", "192.0.2.2,2026-11-20\n", "192.0.2.x\n"];
        let messages: Vec<_> =
            lines.iter().enumerate().map(|(i, l)| import_message(l, i == 0)).collect();
        fails(
            visitors.import_visitors(tokio_stream::iter(messages)).await,
            Code::InvalidArgument,
            &["f.csv:3:", "192.0.2.x"],
        );
        let count =
            visitors.count_visitors(api::CountVisitorsRequest {}).await.unwrap().into_inner();
        assert_eq!(count.total, 0, "a failed import changed nothing");

        // NOT_FOUND.
        fails(
            visitors
                .remove_visitors(api::RemoveVisitorsRequest { ips: vec!["192.0.2.77".into()] })
                .await,
            Code::NotFound,
            &["192.0.2.77"],
        );
        fails(
            rules
                .remove_rules(api::RemoveRulesRequest {
                    list: "deny".into(),
                    cidrs: vec!["198.51.100.0/24".into()],
                })
                .await,
            Code::NotFound,
            &["198.51.100.0/24"],
        );
        fails(
            control.get_stats(api::GetStatsRequest { interface: "nope0".into() }).await,
            Code::NotFound,
            &["nope0"],
        );

        // FAILED_PRECONDITION: a config-file rule is changed in the config file.
        fails(
            rules
                .remove_rules(api::RemoveRulesRequest {
                    list: "deny".into(),
                    cidrs: vec!["203.0.113.0/24".into()],
                })
                .await,
            Code::FailedPrecondition,
            &["config file"],
        );

        // RESOURCE_EXHAUSTED names the map; nothing of the batch is applied.
        let rules_65537: Vec<_> = (0..65_537u32)
            .map(|i| api::Rule {
                list: "allow".into(),
                cidr: std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                ..Default::default()
            })
            .collect();
        fails(
            rules.add_rules(api::AddRulesRequest { rules: rules_65537 }).await,
            Code::ResourceExhausted,
            &["allow", "65536"],
        );
        let allow = rules.list_rules(api::ListRulesRequest { list: "allow".into() }).await.unwrap();
        assert!(allow.into_inner().rules.is_empty());

        // Two slow imports hold their slots; a third is refused at once, and other calls are
        // not held up by them.
        let (tx1, rx1) = tokio::sync::mpsc::channel(1);
        let (tx2, rx2) = tokio::sync::mpsc::channel(1);
        tx1.send(import_message("192.0.2.1\n", true)).await.unwrap();
        tx2.send(import_message("192.0.2.2\n", true)).await.unwrap();
        let mut v1 = visitors.clone();
        let mut v2 = visitors.clone();
        let slow1 = tokio::spawn(async move {
            v1.import_visitors(tokio_stream::wrappers::ReceiverStream::new(rx1)).await
        });
        let slow2 = tokio::spawn(async move {
            v2.import_visitors(tokio_stream::wrappers::ReceiverStream::new(rx2)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        fails(
            visitors
                .import_visitors(tokio_stream::iter(vec![import_message("192.0.2.3\n", true)]))
                .await,
            Code::ResourceExhausted,
            &["imports are already running"],
        );
        let start = std::time::Instant::now();
        visitors.record_visits(record(vec![visit("192.0.2.50", "")])).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "a slow client held up another");
        drop((tx1, tx2));
        assert_eq!(slow1.await.unwrap().unwrap().into_inner().recorded, 1);
        assert_eq!(slow2.await.unwrap().unwrap().into_inner().recorded, 1);

        // Paging: every visitor exactly once, in order.
        let batch = (0..25).map(|i| visit(&format!("198.18.0.{i}"), "2026-11-21")).collect();
        let recorded = visitors.record_visits(record(batch)).await.unwrap().into_inner();
        assert_eq!(recorded.recorded, 25);
        let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = visitors
                .list_visitors(api::ListVisitorsRequest { page_size: 10, page_token: token })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            seen.extend(page.visitors.into_iter().map(|v| v.ip));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!((seen.len(), pages), (28, 3), "{seen:?}");
        let mut sorted = seen.clone();
        sorted.sort_by_key(|ip| ip.parse::<std::net::IpAddr>().unwrap());
        sorted.dedup();
        assert_eq!(seen, sorted);

        // Reflection lists the services, as grpcurl would see them.
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for name in
            ["edge.v1.Control", "edge.v1.Visitors", "edge.v1.Rules", "grpc.health.v1.Health"]
        {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    });

    // TCP: TLS with a client certificate, and then only with the bearer token. The listener
    // is inside the server namespace, so the clients run on a thread that joined it.
    let netns = format!("/run/netns/{}", lab.server_ns);
    let (ca, cert, key, other_ca) =
        (pki.ca.clone(), pki.client_cert.clone(), pki.client_key.clone(), pki.other_ca.clone());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).unwrap();
        // SAFETY: valid fd; only this thread changes namespace.
        assert_eq!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) },
            0
        );
        let pem = |path: &std::path::PathBuf| std::fs::read(path).unwrap();
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
            async {
                let tls = |ca: &std::path::PathBuf, client: bool| {
                    let mut tls = ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(pem(ca)))
                        .domain_name("localhost");
                    if client {
                        tls = tls.identity(Identity::from_pem(pem(&cert), pem(&key)));
                    }
                    tls
                };
                let endpoint = |scheme: &str| {
                    Endpoint::from_shared(format!("{scheme}://{TCP}"))
                        .unwrap()
                        .connect_timeout(Duration::from_secs(3))
                };
                // Plaintext gets no gRPC answer from a TLS listener.
                if let Ok(plain) = endpoint("http").connect().await {
                    let status =
                        ControlClient::new(plain).get_status(api::GetStatusRequest {}).await;
                    assert!(status.is_err(), "plaintext was answered: {status:?}");
                }
                // A server certificate from a CA the client does not trust is refused, and so
                // is a client without a certificate.
                let untrusted = endpoint("https").tls_config(tls(&other_ca, true)).unwrap();
                assert!(untrusted.connect().await.is_err(), "an untrusted server certificate");
                let anonymous_tls = endpoint("https").tls_config(tls(&ca, false)).unwrap();
                let no_cert = match anonymous_tls.connect().await {
                    Ok(channel) => {
                        ControlClient::new(channel).get_status(api::GetStatusRequest {}).await.err()
                    }
                    Err(e) => Some(tonic::Status::unavailable(e.to_string())),
                };
                assert!(no_cert.is_some(), "a client without a certificate was answered");

                let channel =
                    endpoint("https").tls_config(tls(&ca, true)).unwrap().connect().await.unwrap();
                let mut anonymous = ControlClient::new(channel.clone());
                fails(
                    anonymous.get_status(api::GetStatusRequest {}).await,
                    Code::Unauthenticated,
                    &["Bearer"],
                );
                let mut wrong = api::GetStatusRequest {};
                let mut request = tonic::Request::new(std::mem::take(&mut wrong));
                request.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
                fails(anonymous.get_status(request).await, Code::Unauthenticated, &["wrong"]);
                let mut request = tonic::Request::new(api::GetStatusRequest {});
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
                assert!(anonymous.get_status(request).await.unwrap().into_inner().ready);
            },
        );
    })
    .join()
    .expect("the TCP checks");

    // The `edge` command over TLS, from inside the namespace.
    let cli = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.server_ns))
            .arg("--")
            .arg(edge_tests::edge_bin())
            .args(["--connect", &format!("https://{TCP}"), "--server-name", "localhost"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--ca-file")
            .arg(&pki.ca)
            .args(extra)
            .env_remove("EDGE_SOCKET");
        edge_tests::Run::of(&mut cmd)
    };
    let client = [
        "--client-cert",
        pki.client_cert.to_str().unwrap(),
        "--client-key",
        pki.client_key.to_str().unwrap(),
    ];
    let status = cli(&[&client[..], &["status", "--json"]].concat()).ok("edge status over TLS");
    assert!(status.contains("\"ready\": true"), "{status}");
    cli(&[&client[..], &["deny", "add", "198.18.0.0/15", "--comment", "over tls"]].concat())
        .ok("deny add over TLS");
    let refused = cli(&["status"]);
    assert_eq!(refused.code, 1, "no client certificate: {}{}", refused.stdout, refused.stderr);

    // Plaintext only when asked for by name, and the daemon says so when it starts.
    daemon.stop().unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    let plain = config.replace(
        "tls_cert = \"server.pem\"\ntls_key = \"server.key\"\ntls_client_ca = \"ca.pem\"",
        "tcp_plaintext = true",
    );
    assert_ne!(plain, config);
    std::fs::write(&daemon.config, plain).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    assert!(daemon.log().contains("PLAINTEXT"), "{}", daemon.log());
    daemon.stop().unwrap();
    daemon.cli(&["detach", "--iface", &late]).ok("detach");
}

/// The contract is only a contract if ordinary clients can call it with their defaults:
/// grpcio (the C core under Python, C++ and Ruby) sends the socket's path as `:authority`,
/// which the daemon must accept. Health, reflection's service list (v1alpha, what grpcio's
/// reflection client speaks) and an edge.v1 call built from reflected descriptors.
#[test]
fn stock_grpcio_clients_call_the_unix_socket_with_their_defaults() {
    if !privileged("stock_grpcio_clients_call_the_unix_socket_with_their_defaults") {
        return;
    }
    let lab = Lab::new(&[]).expect("creating the namespace lab");
    let mut daemon =
        Daemon::configure(&lab, &[&lab.server_if], "mode = \"monitor\"\n", "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpc_client.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(format!("unix:{}", daemon.socket.display()))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["health"], "SERVING", "{answer}");
    let services = answer["services"].as_array().unwrap();
    for name in [
        "edge.v1.Control",
        "edge.v1.Visitors",
        "edge.v1.Rules",
        "edge.v1.Admissions",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|s| s == name), "{name} not in {answer}");
    }
    assert_eq!(answer["status"]["ready"], true, "{answer}");
    assert_eq!(answer["status"]["interfaces"][0], lab.server_if.as_str(), "{answer}");
    daemon.stop().unwrap();
}
