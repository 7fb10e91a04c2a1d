//! End to end: the real `edge` binary attaches to a veth in a namespace lab, and real TCP
//! connections from a visitor, an allowed, a denied and an unknown source get through or not.
use std::{path::Path, process::Command};

use edge_tests::{
    edge_bin,
    lab::{Lab, ALLOWED, DENIED, UNKNOWN, VISITOR},
    privileged, probe, Run,
};

const TIMEOUT_MS: u32 = 700;

fn edge(cmd: &mut Command) -> Run {
    Run::of(cmd)
}

/// `edge replay PCAP --policy POLICY --json`, which must succeed, as one JSON value per line.
fn replay_json(pcap: &Path, policy: &Path) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(edge_bin());
    cmd.arg("replay").arg(pcap).arg("--policy").arg(policy).arg("--json");
    let run = edge(&mut cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..50 {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn attach_enforces_on_real_traffic_and_detach_removes_it() {
    if !privileged("attach_enforces_on_real_traffic_and_detach_removes_it") {
        return;
    }
    let mut lab =
        Lab::new(&[VISITOR, ALLOWED, DENIED, UNKNOWN]).expect("creating the namespace lab");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("visitors.csv"), format!("{VISITOR}\n")).unwrap();
    let policy = dir.path().join("strict.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n[lists]\nallow = [\"198.51.100.0/24\"]\n\
         deny = [\"203.0.113.0/24\"]\nvisitors = \"visitors.csv\"\n",
    )
    .unwrap();

    lab.serve(probe(), &["192.0.2.1:443", "192.0.2.1:22"]).unwrap();
    wait_until("the server to listen", || lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    // Without the filter everyone connects.
    for src in [VISITOR, ALLOWED, DENIED, UNKNOWN] {
        assert!(lab.connects(probe(), src, 443, TIMEOUT_MS).unwrap(), "{src} before attach");
    }

    let iface = lab.server_if.clone();
    let attach = |extra: &[&str]| {
        let mut cmd = lab.in_server(edge_bin());
        cmd.args(["attach", "--iface", &iface, "--policy"]).arg(&policy).args(extra);
        edge(&mut cmd)
    };
    let run = attach(&["--xdp-mode", "native"]);
    assert_eq!(run.code, 0, "attach: {}{}", run.stdout, run.stderr);
    assert!(Path::new(&format!("/sys/fs/bpf/edge/{iface}/link")).exists());

    let again = attach(&[]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already attached"), "{}", again.stderr);

    // Forget neighbours so the connections below need ARP through the filter.
    for (ns, dev) in [(&lab.server_ns, &lab.server_if), (&lab.client_ns, &lab.client_if)] {
        edge_tests::lab::sh(Command::new("ip").args(["-n", ns, "neigh", "flush", "dev", dev]))
            .unwrap();
    }

    // The attaching process has exited: the filter stays through its pins.
    assert!(lab.connects(probe(), VISITOR, 443, TIMEOUT_MS).unwrap(), "visitor");
    assert!(lab.connects(probe(), ALLOWED, 443, TIMEOUT_MS).unwrap(), "allowed");
    assert!(
        !lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(),
        "unknown on a protected port"
    );
    assert!(!lab.connects(probe(), DENIED, 443, TIMEOUT_MS).unwrap(), "denied");
    assert!(
        lab.connects(probe(), UNKNOWN, 22, TIMEOUT_MS).unwrap(),
        "unknown on an unprotected port"
    );
    assert!(!lab.connects(probe(), DENIED, 22, TIMEOUT_MS).unwrap(), "denied on any port");

    let stats = edge(Command::new(edge_bin()).args(["stats", "--iface", &iface, "--json"]));
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stats.stdout).unwrap();
    let packets = |reason: &str, action: &str| {
        rows.iter()
            .find(|r| r["reason"] == reason && r["action"] == action)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    };
    assert!(packets("visitor", "pass") >= 3, "visitor SYN, ACK, FIN: {}", stats.stdout);
    assert!(packets("allow", "pass") >= 3, "{}", stats.stdout);
    assert!(packets("unknown_rate", "drop") >= 1, "{}", stats.stdout);
    assert!(packets("deny", "drop") >= 2, "{}", stats.stdout);
    assert!(packets("pass_unprotected", "pass") >= 3, "{}", stats.stdout);
    assert!(packets("non_ip", "pass") >= 1, "ARP: {}", stats.stdout);

    let detach = edge(Command::new(edge_bin()).args(["detach", "--iface", &iface]));
    assert_eq!(detach.code, 0, "{}", detach.stderr);
    assert!(!Path::new(&format!("/sys/fs/bpf/edge/{iface}")).exists(), "pins removed");
    assert!(lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "unknown after detach");
    assert!(lab.connects(probe(), DENIED, 443, TIMEOUT_MS).unwrap(), "denied after detach");

    let twice = edge(Command::new(edge_bin()).args(["detach", "--iface", &iface]));
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.contains("not attached"), "{}", twice.stderr);
}

#[test]
fn clear_errors_and_exit_codes() {
    if !privileged("clear_errors_and_exit_codes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "mode = \"enforce\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "mode = \"enforce\"\n[unknown]\nburst = 0\n").unwrap();

    let run = edge(
        Command::new(edge_bin())
            .args(["attach", "--iface", "edge-nosuchif", "--policy"])
            .arg(&good),
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no such network interface: edge-nosuchif"), "{}", run.stderr);

    let run =
        edge(Command::new(edge_bin()).args(["attach", "--iface", "lo", "--policy"]).arg(&bad));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("bad.toml:3:9: unknown.burst: 0 is outside 1..="),
        "{}",
        run.stderr
    );
    assert!(!Path::new("/sys/fs/bpf/edge/lo").exists(), "nothing attached on a bad policy");

    let run = edge(Command::new(edge_bin()).args(["stats", "--iface", "edge-nosuchif"]));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not attached"), "{}", run.stderr);

    let run = edge(Command::new(edge_bin()).args(["attach", "--iface"]));
    assert_eq!(run.code, 2, "usage errors exit 2");
}

#[test]
fn replay_judges_every_frame_of_a_capture() {
    if !privileged("replay_judges_every_frame_of_a_capture") {
        return;
    }
    use edge_tests::frames::{arp, frame, L4};
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("visitors.csv"), "192.0.2.10\n").unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n[lists]\ndeny = [\"203.0.113.0/24\"]\nvisitors = \"visitors.csv\"\n").unwrap();
    let frames = [
        frame(VISITOR, L4::Tcp(443)).build(),
        frame(UNKNOWN, L4::Tcp(443)).build(),
        frame(DENIED, L4::Tcp(22)).build(),
        arp(),
        frame(UNKNOWN, L4::Tcp(443)).build()[..30].to_vec(),
        vec![0u8; 10],
    ];
    let pcap = dir.path().join("capture.pcap");
    let mut writer = PcapWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    for f in &frames {
        writer
            .write_packet(&PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f))
            .unwrap();
    }
    drop(writer);

    let lines = replay_json(&pcap, &policy);
    let got: Vec<(String, String)> = lines[..frames.len()]
        .iter()
        .map(|v| (v["verdict"].as_str().unwrap().into(), v["reason"].as_str().unwrap().into()))
        .collect();
    let want = [
        ("pass", "visitor"),
        ("drop", "unknown_rate"),
        ("drop", "deny"),
        ("pass", "non_ip"),
        ("drop", "malformed"),
        ("drop", "runt"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    for (i, v) in lines[..frames.len()].iter().enumerate() {
        assert_eq!(v["index"], i);
    }
    let summary = &lines[frames.len()]["summary"];
    assert_eq!(
        (summary["frames"].as_u64(), summary["pass"].as_u64(), summary["drop"].as_u64()),
        (Some(6), Some(2), Some(4))
    );

    // Monitor mode: same reasons, every frame passes, drops flagged.
    std::fs::write(
        &policy,
        "mode = \"monitor\"\n[unknown]\nrate_pps = 0\n[lists]\nvisitors = \"visitors.csv\"\n",
    )
    .unwrap();
    let second = &replay_json(&pcap, &policy)[1];
    assert_eq!(
        (second["verdict"].as_str(), second["reason"].as_str(), second["would_drop"].as_bool()),
        (Some("pass"), Some("unknown_rate"), Some(true))
    );

    let run = edge(
        Command::new(edge_bin())
            .arg("replay")
            .arg(dir.path().join("p.toml"))
            .arg("--policy")
            .arg(&policy),
    );
    assert_eq!(run.code, 1, "a policy file is not a capture");
}

#[test]
fn without_privileges_the_error_says_so() {
    if !privileged("without_privileges_the_error_says_so") {
        return;
    }
    // A world-readable policy so the unprivileged user gets as far as the kernel.
    let policy = std::env::temp_dir().join(format!("edge-unpriv-{}.toml", std::process::id()));
    std::fs::write(&policy, "mode = \"enforce\"\n").unwrap();
    let run = edge(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .arg(edge_bin())
            .args(["attach", "--iface", "lo", "--policy"])
            .arg(&policy),
    );
    let _ = std::fs::remove_file(&policy);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("needs root, or CAP_BPF and CAP_NET_ADMIN"), "{}", run.stderr);
}

#[test]
fn a_foreign_xdp_program_is_reported_not_replaced() {
    if !privileged("a_foreign_xdp_program_is_reported_not_replaced") {
        return;
    }
    use std::os::fd::AsRawFd;
    let lab = Lab::new(&[UNKNOWN]).expect("creating the namespace lab");
    let (ns, iface) = (lab.server_ns.clone(), lab.server_if.clone());
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Another tool's XDP program, attached from a thread that entered the server namespace and
    // holding its link until the check below is done.
    let holder = std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut other = aya::Ebpf::load(edge_tests::BASELINE_OBJECT).unwrap();
        let prog: &mut aya::programs::Xdp = other.program_mut("empty").unwrap().try_into().unwrap();
        prog.load().unwrap();
        prog.attach(&iface, aya::programs::XdpMode::Skb).unwrap();
        attached_tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    attached_rx.recv().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "mode = \"enforce\"\n").unwrap();
    let mut cmd = lab.in_server(edge_bin());
    cmd.args(["attach", "--iface", &lab.server_if, "--xdp-mode", "skb", "--policy"]).arg(&policy);
    let run = edge(&mut cmd);
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("another XDP program is already attached"), "{}", run.stderr);
    assert!(
        !Path::new(&format!("/sys/fs/bpf/edge/{}", lab.server_if)).exists(),
        "no pins left behind"
    );
}

#[test]
fn attach_will_not_cut_the_operators_ssh_session_without_force() {
    if !privileged("attach_will_not_cut_the_operators_ssh_session_without_force") {
        return;
    }
    let mut lab = Lab::new(&[ALLOWED, UNKNOWN]).expect("creating the namespace lab");
    lab.serve(probe(), &["192.0.2.1:22"]).unwrap();
    wait_until("the server to listen", || lab.connects(probe(), UNKNOWN, 22, TIMEOUT_MS).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("ssh.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/22\"]\n[unknown]\nrate_pps = 0\n\
         [lists]\nallow = [\"198.51.100.0/24\"]\n",
    )
    .unwrap();
    let iface = lab.server_if.clone();
    let pins = format!("/sys/fs/bpf/edge/{iface}");
    let attach = |ssh: &str, extra: &[&str]| {
        let mut cmd = lab.in_server(edge_bin());
        cmd.args(["attach", "--iface", &iface, "--policy"]).arg(&policy).args(extra);
        edge(cmd.env("SSH_CONNECTION", ssh))
    };
    let detach = || {
        let mut cmd = lab.in_server(edge_bin());
        edge(cmd.args(["detach", "--iface", &iface])).ok("detach");
    };

    // An unknown operator on the interface's own address: refused, nothing attached.
    let run = attach(&format!("{UNKNOWN} 50022 192.0.2.1 22"), &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("SSH session from {UNKNOWN}:50022 to 192.0.2.1:22"))
            && run.stderr.contains("dropped (unknown_rate)")
            && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert!(!Path::new(&pins).exists(), "nothing attached");
    assert!(lab.connects(probe(), UNKNOWN, 22, TIMEOUT_MS).unwrap(), "still connected");

    // An operator on the allow list: attached without a word.
    let run = attach(&format!("{ALLOWED} 50022 192.0.2.1 22"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    detach();

    // A session that arrives on another interface (here: lo) is not affected.
    let run = attach(&format!("{UNKNOWN} 50022 127.0.0.1 22"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    detach();

    // --force attaches with a warning, and the warning was right.
    let run = attach(&format!("{UNKNOWN} 50022 192.0.2.1 22"), &["--force"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("warning (--force)"), "{}", run.stderr);
    assert!(!lab.connects(probe(), UNKNOWN, 22, TIMEOUT_MS).unwrap(), "cut, as warned");
    assert!(lab.connects(probe(), ALLOWED, 22, TIMEOUT_MS).unwrap());
    detach();
}

/// Captures as tcpdump writes them: a snap length cuts frames (each is judged on what was
/// captured, and the output says so), a file cut off mid-frame is judged up to the cut and
/// then reported, a text file is named for what it is not, and a reader that stops early
/// (`| head`) ends the command quietly.
#[test]
fn replay_reads_tcpdump_captures_cut_by_a_snap_length_or_cut_short() {
    if !privileged("replay_reads_tcpdump_captures_cut_by_a_snap_length_or_cut_short") {
        return;
    }
    let lab = Lab::new(&[UNKNOWN]).expect("creating the namespace lab");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("snap96.pcap");
    let mut tcpdump = lab
        .in_server("tcpdump")
        .args(["-i", &lab.server_if, "-s", "96", "-U", "-Z", "root", "-c", "20", "-w"])
        .arg(&pcap)
        .args(["udp", "and", "dst", "port", "443"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let sent = lab
        .in_client(probe())
        .args(["flood", "--from", UNKNOWN, "--to", "192.0.2.1:443", "--pps", "100"])
        .args(["--secs", "0.4", "--size", "400"])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(tcpdump.wait().unwrap().success(), "tcpdump captured its 20 frames");

    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n").unwrap();
    let lines = replay_json(&pcap, &policy);
    assert_eq!(lines.len(), 21, "20 frames and the summary");
    for frame in &lines[..20] {
        assert_eq!(frame["reason"], "unknown_rate", "{frame}");
        assert_eq!(
            (frame["captured"].as_u64(), frame["captured_of"].as_u64()),
            (Some(96), Some(442))
        );
    }
    assert_eq!(lines[20]["summary"]["cut"], 20);
    let text = edge(Command::new(edge_bin()).arg("replay").arg(&pcap).arg("--policy").arg(&policy));
    assert!(
        text.stdout.contains("(cut by the snap length: judged on 96 of 442 bytes)"),
        "{}",
        text.stdout
    );

    // Cut short inside the last frame: the frames before are judged, then the cut is named.
    let bytes = std::fs::read(&pcap).unwrap();
    let short = dir.path().join("short.pcap");
    std::fs::write(&short, &bytes[..bytes.len() - 30]).unwrap();
    let run = edge(
        Command::new(edge_bin())
            .arg("replay")
            .arg(&short)
            .arg("--policy")
            .arg(&policy)
            .arg("--json"),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 20, "19 frames and the summary: {}", run.stdout);
    assert!(run.stderr.contains("ends inside frame 19"), "{}", run.stderr);

    // Not a capture at all.
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "these are notes, not packets\n").unwrap();
    let run =
        edge(Command::new(edge_bin()).arg("replay").arg(&text_file).arg("--policy").arg(&policy));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a pcap or pcapng file"), "{}", run.stderr);

    // `| head -3`: exit 0, no panic.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "\"{}\" replay {} --policy {} | head -3 >/dev/null; exit ${{PIPESTATUS[0]}}",
            edge_bin().display(),
            pcap.display(),
            policy.display()
        ))
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", String::from_utf8_lossy(&piped.stderr));
}
