//! edge-probe: the lab's traffic tool. `serve` listens on TCP ports and accepts forever;
//! `connect` makes one TCP connection from a chosen source address and exits 0 if it completes,
//! 1 if it times out or is refused; `knock` sends one UDP datagram holding a ticket (its text
//! form, decoded to the 48 bytes) from a chosen source; `flood` sends UDP datagrams from a
//! chosen source at a steady rate for a while; `count` receives UDP for a while and prints how
//! many datagrams came from each source (JSON); `spoof` sends raw TCP segments (SYN or ACK)
//! with a source address the sender does not own; `echo` listens and echoes what each
//! connection sends; `talk` holds one connection to an echo server for a while, checking every
//! echo; `xdp-pass` attaches an XDP program that passes everything to an interface until it is
//! killed (a veth delivers the frames its peer sends back with XDP_TX only to an interface
//! that runs one). Used by the end-to-end tests and the demo.
use std::{
    net::{SocketAddr, TcpListener},
    process::ExitCode,
    time::Duration,
};

use socket2::{Domain, Socket, Type};

fn usage() -> ExitCode {
    eprintln!(
        "usage: edge-probe serve ADDR:PORT... | connect --from IP --to ADDR:PORT [--timeout-ms N] \
         | knock --from IP --to ADDR:PORT --ticket TEXT \
         | flood --from IP --to ADDR:PORT --pps N --secs S [--size BYTES] \
         | count --listen ADDR:PORT --secs S \
         | spoof --from IP --to ADDR:PORT --flag syn|ack \
         | echo ADDR:PORT [REPORT_FILE] | talk --from IP --to ADDR:PORT --secs S | xdp-pass IFACE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        Some("knock") => knock(&args[1..]),
        Some("flood") => flood(&args[1..]),
        Some("count") => count(&args[1..]),
        Some("spoof") => spoof(&args[1..]),
        Some("echo") => echo(&args[1..]),
        Some("talk") => talk(&args[1..]),
        Some("xdp-pass") => xdp_pass(&args[1..]),
        _ => usage(),
    }
}

fn serve(addrs: &[String]) -> ExitCode {
    let mut handles = Vec::new();
    for addr in addrs {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("edge-probe: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        handles.push(std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    ExitCode::SUCCESS
}

fn connect(args: &[String]) -> ExitCode {
    let (mut from, mut to, mut timeout_ms) = (None, None, 1000u64);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next();
        match (flag.as_str(), value) {
            ("--from", Some(v)) => from = v.parse::<std::net::IpAddr>().ok(),
            ("--to", Some(v)) => to = v.parse::<SocketAddr>().ok(),
            ("--timeout-ms", Some(v)) => timeout_ms = v.parse().unwrap_or(1000),
            _ => return usage(),
        }
    }
    let (Some(from), Some(to)) = (from, to) else { return usage() };
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
    if let Err(e) = socket.bind(&SocketAddr::new(from, 0).into()) {
        eprintln!("edge-probe: cannot bind {from}: {e}");
        return ExitCode::from(3);
    }
    match socket.connect_timeout(&to.into(), Duration::from_millis(timeout_ms)) {
        Ok(()) => {
            println!("connected {from} -> {to}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("failed {from} -> {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn knock(args: &[String]) -> ExitCode {
    let (mut from, mut to, mut ticket) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--from", Some(v)) => from = v.parse::<std::net::IpAddr>().ok(),
            ("--to", Some(v)) => to = v.parse::<SocketAddr>().ok(),
            ("--ticket", Some(v)) => ticket = edge::ticket::decode(v).ok(),
            _ => return usage(),
        }
    }
    let (Some(from), Some(to), Some(ticket)) = (from, to, ticket) else { return usage() };
    let socket = match std::net::UdpSocket::bind(SocketAddr::new(from, 0)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edge-probe: cannot bind {from}: {e}");
            return ExitCode::from(3);
        }
    };
    match socket.send_to(&ticket.0, to) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-probe: knock to {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Paced in 10 ms slices: each slice sends its share, then sleeps to the slice's end.
fn flood(args: &[String]) -> ExitCode {
    let (mut from, mut to, mut pps, mut secs) = (None, None, None, None);
    let mut payload = b"flood".to_vec();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--from", Some(v)) => from = v.parse::<std::net::IpAddr>().ok(),
            ("--to", Some(v)) => to = v.parse::<SocketAddr>().ok(),
            ("--pps", Some(v)) => pps = v.parse::<u64>().ok(),
            ("--secs", Some(v)) => secs = v.parse::<f64>().ok(),
            ("--size", Some(v)) => payload = vec![b'x'; v.parse().unwrap_or(5)],
            _ => return usage(),
        }
    }
    let (Some(from), Some(to), Some(pps), Some(secs)) = (from, to, pps, secs) else {
        return usage();
    };
    let socket = match std::net::UdpSocket::bind(SocketAddr::new(from, 0)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edge-probe: cannot bind {from}: {e}");
            return ExitCode::from(3);
        }
    };
    let start = std::time::Instant::now();
    let slice = Duration::from_millis(10);
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64 + pps / 100;
        while sent < due {
            let _ = socket.send_to(&payload, to);
            sent += 1;
        }
        std::thread::sleep(slice);
    }
    println!("sent {sent} datagrams in {:.1} s", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

fn count(args: &[String]) -> ExitCode {
    let (mut listen, mut secs) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v.parse::<SocketAddr>().ok(),
            ("--secs", Some(v)) => secs = v.parse::<f64>().ok(),
            _ => return usage(),
        }
    }
    let (Some(listen), Some(secs)) = (listen, secs) else { return usage() };
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, None).expect("socket");
    // Room for bursts: a datagram lost in the socket would look like one the filter lost.
    let _ = socket.set_recv_buffer_size(16 << 20);
    if let Err(e) = socket.bind(&listen.into()) {
        eprintln!("edge-probe: cannot bind {listen}: {e}");
        return ExitCode::from(3);
    }
    let socket: std::net::UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    println!("listening");
    let start = std::time::Instant::now();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut buf = [0u8; 2048];
    while start.elapsed().as_secs_f64() < secs {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            *counts.entry(from.ip().to_string()).or_default() += 1;
        }
    }
    let body: Vec<String> = counts.iter().map(|(ip, n)| format!("\"{ip}\": {n}")).collect();
    println!("{{{}}}", body.join(", "));
    ExitCode::SUCCESS
}

/// One IPv4 TCP segment with a forged source, through a raw socket (IP_HDRINCL): what an
/// attacker who cannot receive replies can send.
fn spoof(args: &[String]) -> ExitCode {
    let (mut from, mut to, mut flag) = (None, None, None);
    let mut it = args.iter();
    while let Some(name) = it.next() {
        match (name.as_str(), it.next()) {
            ("--from", Some(v)) => from = v.parse::<std::net::Ipv4Addr>().ok(),
            ("--to", Some(v)) => to = v.parse::<std::net::SocketAddrV4>().ok(),
            ("--flag", Some(v)) if v == "syn" || v == "ack" => flag = Some(v.clone()),
            _ => return usage(),
        }
    }
    let (Some(from), Some(to), Some(flag)) = (from, to, flag) else { return usage() };
    let ip = etherparse::PacketBuilder::ipv4(from.octets(), to.ip().octets(), 64);
    let tcp = ip.tcp(40_000, to.port(), 0x1234_5678, 64_240);
    let tcp = if flag == "syn" { tcp.syn() } else { tcp.ack(0x0bad_cafe) };
    let mut packet = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut packet, &[]).expect("writing to a Vec");
    let socket = Socket::new(
        Domain::IPV4,
        Type::from(libc::SOCK_RAW),
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("a raw socket (needs CAP_NET_RAW)");
    match socket.send_to(&packet, &SocketAddr::V4(to).into()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-probe: spoof to {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Echoes each connection; with `REPORT_FILE`, appends a line per accepted connection: the
/// peer's port and what the connection negotiated (see `negotiated`).
fn echo(args: &[String]) -> ExitCode {
    let (addr, report) = match args {
        [addr] => (addr, None),
        [addr, report] => (addr, Some(report.clone())),
        _ => return usage(),
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edge-probe: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stream in listener.incoming().flatten() {
        if let (Some(report), Ok(peer)) = (&report, stream.peer_addr()) {
            use std::io::Write;
            let line = format!("{} {}\n", peer.port(), negotiated(&stream));
            let file = std::fs::OpenOptions::new().create(true).append(true).open(report);
            let _ = file.and_then(|mut f| f.write_all(line.as_bytes()));
        }
        std::thread::spawn(move || {
            let mut reader = stream;
            let mut writer = reader.try_clone().expect("a second handle on the stream");
            let _ = std::io::copy(&mut reader, &mut writer);
        });
    }
    ExitCode::SUCCESS
}

/// What a connection negotiated, from the kernel's TCP_INFO: `ts`, `sack`, `ecn` when on,
/// `wscale:SND,RCV` and `mss:N`.
fn negotiated(stream: &std::net::TcpStream) -> String {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket, buffer and length.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if got != 0 {
        return format!("TCP_INFO failed: {}", std::io::Error::last_os_error());
    }
    // include/uapi/linux/tcp.h: TCPI_OPT_TIMESTAMPS 1, _SACK 2, _WSCALE 4, _ECN 8.
    let mut words = Vec::new();
    for (bit, name) in [(1, "ts"), (2, "sack"), (8, "ecn")] {
        if info.tcpi_options & bit != 0 {
            words.push(name.to_string());
        }
    }
    if info.tcpi_options & 4 != 0 {
        let scales = info.tcpi_snd_rcv_wscale;
        words.push(format!("wscale:{},{}", scales & 0xf, scales >> 4));
    }
    words.push(format!("mss:{}", info.tcpi_snd_mss));
    words.join(" ")
}

/// One connection for `--secs`: a numbered 1 KiB message every 50 ms, each echo checked.
/// Prints how many rounds went through; exits 1 if the connection fails or an echo differs.
fn talk(args: &[String]) -> ExitCode {
    use std::io::{Read, Write};
    let (mut from, mut to, mut secs) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--from", Some(v)) => from = v.parse::<std::net::IpAddr>().ok(),
            ("--to", Some(v)) => to = v.parse::<SocketAddr>().ok(),
            ("--secs", Some(v)) => secs = v.parse::<f64>().ok(),
            _ => return usage(),
        }
    }
    let (Some(from), Some(to), Some(secs)) = (from, to, secs) else { return usage() };
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
    if let Err(e) = socket.bind(&SocketAddr::new(from, 0).into()) {
        eprintln!("edge-probe: cannot bind {from}: {e}");
        return ExitCode::from(3);
    }
    if let Err(e) = socket.connect_timeout(&to.into(), Duration::from_secs(2)) {
        println!("failed {from} -> {to}: {e}");
        return ExitCode::FAILURE;
    }
    let mut stream: std::net::TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    println!("negotiated {}", negotiated(&stream));
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let message: Vec<u8> = (0..1024u32).map(|i| (i as u64 + rounds) as u8).collect();
        let mut echoed = vec![0u8; message.len()];
        if let Err(e) = stream.write_all(&message).and_then(|()| stream.read_exact(&mut echoed)) {
            println!("failed after {rounds} rounds: {e}");
            return ExitCode::FAILURE;
        }
        if echoed != message {
            println!("round {rounds}: the echo differs");
            return ExitCode::FAILURE;
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("talked {rounds} rounds");
    ExitCode::SUCCESS
}

fn xdp_pass(args: &[String]) -> ExitCode {
    let [iface] = args else { return usage() };
    let attached = (|| -> anyhow::Result<aya::Ebpf> {
        let mut ebpf = aya::Ebpf::load(edge_tests::BASELINE_OBJECT)?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut("empty")
            .ok_or_else(|| anyhow::anyhow!("no `empty` program"))?
            .try_into()?;
        prog.load()?;
        prog.attach(iface, aya::programs::XdpMode::Driver)?;
        Ok(ebpf)
    })();
    match attached {
        Ok(_ebpf) => {
            println!("attached to {iface}");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("edge-probe: xdp-pass {iface}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
