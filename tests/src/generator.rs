//! The lab's flood machinery, shared by the lab benchmarks: the live-frames generator on the
//! client's veth (BPF_PROG_TEST_RUN transmitting each frame with XDP_TX), the receiver's NAPI
//! in a thread pinned to a CPU of its own, and the PM QoS hold that keeps idle vCPUs awake.
use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    EbpfLoader,
};

use crate::{
    frames::{frame, L4},
    lab::{sh, Lab},
    BASELINE_OBJECT,
};

/// The generator and everything on the client's side run on this CPU...
pub const GENERATOR_CPU: usize = 1;
/// ...and the receiver's NAPI (the filter) on this one.
pub const RECEIVER_CPU: usize = 0;
/// The fixed source of the generator's frames (`generate_fixed`; the others rewrite it).
pub const UNKNOWN_SOURCE: &str = "203.0.113.7";
/// The lab's visitor whitelist: this many addresses, [`lab_visitor`]`(0..LAB_VISITORS)`. Big
/// enough that a lookup in a hash of it misses the caches, as a real three-week visitor set
/// does; nftables still loads it in seconds. The generator's `generate_visitor_syn` draws its
/// forged sources from the same set (the formula is repeated there).
pub const LAB_VISITORS: u32 = 1_000_000;

/// Visitor `i` of the lab's whitelist. Multiplying by an odd constant permutes u32: distinct,
/// spread addresses, kept in 128.0.0.0/2 (apart from the lab's 192.0.2.0/24 and the random
/// flood's other sources).
pub fn lab_visitor(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761) & 0x3fff_ffff | 0x8000_0000)
}

/// Ethernet, IPv4 and TCP with Linux's SYN options: `SYN_FRAME` in the generator's program.
const SYN_FRAME: usize = 74;

/// The SYN flood's frame: a TCP SYN to the origin's port 443 with the options Linux sends
/// (MSS, SACK permitted, timestamps, window scale) in Linux's order. `generate_visitor_syn`
/// rewrites its source, source port and sequence number and both checksums.
fn syn_frame() -> Vec<u8> {
    use etherparse::TcpOptionElement as Opt;
    let syn = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(
            UNKNOWN_SOURCE.parse::<std::net::Ipv4Addr>().expect("an address").octets(),
            [192, 0, 2, 1],
            64,
        )
        .tcp(40_000, 443, 1, 64_240)
        .syn()
        .options(&[
            Opt::MaximumSegmentSize(1460),
            Opt::SelectiveAcknowledgementPermitted,
            Opt::Timestamp(1, 0),
            Opt::Noop,
            Opt::WindowScale(7),
        ])
        .expect("the options fit");
    let mut out = Vec::new();
    syn.write(&mut out, &[]).expect("writing to a Vec");
    out
}

/// One TCP connection from `src` (in the caller's namespace), closed at once.
pub fn tcp_connects(src: &str, to: &str, timeout_ms: u64) -> bool {
    let (Ok(src), Ok(to)) = (src.parse::<std::net::IpAddr>(), to.parse::<std::net::SocketAddr>())
    else {
        return false;
    };
    let timeout = Duration::from_millis(timeout_ms);
    tcp_connects_from(std::net::SocketAddr::new(src, 0), to, timeout).unwrap_or(false)
}

/// One TCP connection from `src` (port 0: any) in the caller's namespace, closed at once;
/// `None` if `src` cannot be bound.
pub fn tcp_connects_from(
    src: std::net::SocketAddr,
    to: std::net::SocketAddr,
    timeout: Duration,
) -> Option<bool> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&src.into()).ok()?;
    Some(socket.connect_timeout(&to.into(), timeout).is_ok())
}

/// Keeps the CPUs out of their halt idle state while held (PM QoS: a 0 µs wake-up latency
/// request, as tuned's network-latency profile makes; closing the file withdraws it). A halted
/// vCPU is woken by the hypervisor tens of microseconds late, while the generator fills the
/// veth's 256-frame ring in a few: what overflows then measures the VM's wake-up, not the
/// filter, and the same for every filter compared.
pub struct NoIdleSleep {
    _request: Option<std::fs::File>,
}

impl NoIdleSleep {
    pub fn hold() -> Self {
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .and_then(|mut f| f.write_all(&0i32.to_ne_bytes()).map(|()| f));
        match held {
            Ok(f) => Self { _request: Some(f) },
            Err(e) => {
                eprintln!(
                    "lab: cannot hold /dev/cpu_dma_latency ({e}): idle CPUs may halt, and rates \
                     be lower"
                );
                Self { _request: None }
            }
        }
    }
}

/// The receiver: NAPI in a thread of its own, pinned to the receiver CPU, and GRO on (so the
/// veth takes XDP frames even without an XDP program, as under nftables).
pub fn receiver_setup(lab: &Lab) -> Result<()> {
    let iface = &lab.server_if;
    sh(Command::new("ip").args([
        "netns",
        "exec",
        &lab.server_ns,
        "ethtool",
        "-K",
        iface,
        "gro",
        "on",
    ]))?;
    sh(Command::new("ip").args([
        "netns",
        "exec",
        &lab.server_ns,
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{iface}/threaded"),
    ]))?;
    Ok(())
}

/// The NAPI threads of `iface` (they appear once NAPI is enabled, threaded).
pub fn napi_threads(iface: &str) -> Result<Vec<i32>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(&format!("napi/{iface}-")) {
            threads.push(pid);
        }
    }
    Ok(threads)
}

/// Pins every NAPI thread of `iface` to `cpu`. None is an error: the receiver would then run
/// in softirq on whichever CPU schedules it, the generator's, and the lab measure nothing real.
pub fn pin_napi_threads(iface: &str, cpu: usize) -> Result<()> {
    let threads = napi_threads(iface)?;
    if threads.is_empty() {
        bail!("no NAPI thread for {iface}: threaded NAPI is not on");
    }
    threads.into_iter().try_for_each(|pid| set_cpu(pid, cpu))
}

pub fn set_cpu(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for sched_setaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity({pid}, cpu {cpu}): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn netns(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into a network namespace.
pub fn enter(ns: &Path) -> Result<()> {
    let file = std::fs::File::open(ns)?;
    // SAFETY: a valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {}: {}", ns.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// The live-frames generator on the client's veth.
pub struct Generator {
    client_ns: PathBuf,
    client_if: String,
    server_if: String,
    /// The frames (UDP over IPv4 and IPv6, a TCP SYN over IPv4), behind `pad` bytes the
    /// generator strips before sending them.
    frame: Vec<u8>,
    frame_v6: Vec<u8>,
    frame_syn: Vec<u8>,
    pad: u32,
}

impl Generator {
    pub fn new(lab: &Lab) -> Result<Self> {
        let mac = |ns: &str, dev: &str| -> Result<[u8; 6]> {
            let out = sh(Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]))?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let text = v[0]["address"].as_str().context("no MAC address")?.to_string();
            let bytes: Vec<u8> =
                text.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
            bytes.try_into().map_err(|_| anyhow::anyhow!("bad MAC {text}"))
        };
        let mut frame = frame(UNKNOWN_SOURCE, L4::Udp(443)).payload_bytes(&[0u8; 18]).build();
        // No UDP checksum (allowed over IPv4): the random generator rewrites the source, and
        // what passes the filter must reach the origin's socket, not fail its checksum.
        frame[40..42].copy_from_slice(&[0, 0]);
        let mut frame_v6 =
            crate::frames::frame("2001:db8::7", L4::Udp(443)).payload_bytes(&[0u8; 18]).build();
        let mut frame_syn = syn_frame();
        let (server_mac, client_mac) =
            (mac(&lab.server_ns, &lab.server_if)?, mac(&lab.client_ns, &lab.client_if)?);
        for f in [&mut frame, &mut frame_v6, &mut frame_syn] {
            f[0..6].copy_from_slice(&server_mac);
            f[6..12].copy_from_slice(&client_mac);
        }
        let mut gen = Self {
            client_ns: netns(&lab.client_ns),
            client_if: lab.client_if.clone(),
            server_if: lab.server_if.clone(),
            frame,
            frame_v6,
            frame_syn,
            pad: 0,
        };
        // A NIC driver starts packet data on a cache line; live-frames pages start it part-way
        // into one (after the kernel's page header), so a filter reading the Ethernet and IP
        // headers would touch two lines where a real receive touches one. Pad the frame so
        // that what is sent starts on a line.
        let address = gen.with_program("data_alignment", "alignment", u32::MAX, |run| {
            run(1)?;
            Ok(())
        })?;
        let offset = address % 64;
        gen.pad = ((64 - offset) % 64) as u32;
        gen.frame = [vec![0u8; gen.pad as usize], gen.frame].concat();
        gen.frame_v6 = [vec![0u8; gen.pad as usize], gen.frame_v6].concat();
        gen.frame_syn = [vec![0u8; gen.pad as usize], gen.frame_syn].concat();
        eprintln!(
            "lab: generator: packet data starts {offset} bytes into a cache line; {} bytes of \
             padding stripped per frame",
            gen.pad
        );
        Ok(gen)
    }

    /// The SYN frame without its padding: `generate_visitor_syn` writes it whole into every
    /// frame it sends.
    fn syn_template(&self) -> Result<[u8; SYN_FRAME]> {
        self.frame_syn[self.pad as usize..]
            .try_into()
            .with_context(|| format!("the SYN frame is not {SYN_FRAME} bytes"))
    }

    /// CPU time the receiver's NAPI threads have run so far (their scheduler statistics).
    pub fn receiver_runtime(&self) -> Result<Duration> {
        let mut ns = 0u64;
        for pid in napi_threads(&self.server_if)? {
            let path = format!("/proc/{pid}/schedstat");
            let stat = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("{path}: no run time"))?;
        }
        Ok(Duration::from_nanos(ns))
    }

    /// Runs generator program `name` flat out for `secs` on the generator CPU; returns the
    /// frames per second it offered.
    pub fn run(&self, name: &str, secs: Duration) -> Result<f64> {
        self.run_at(name, secs, None)
    }

    /// As `run`, with only `share` (0..=1) of the runs transmitting: a smooth lower rate
    /// (pacing by sleeping between calls would send bursts that overflow the veth's ring).
    /// Returns the frames per second transmitted (counted by the program).
    pub fn run_at(&self, name: &str, secs: Duration, share: Option<f64>) -> Result<f64> {
        let share = share.unwrap_or(1.0).clamp(0.0, 1.0);
        let tx_share = if share >= 1.0 { u32::MAX } else { (share * f64::from(u32::MAX)) as u32 };
        let start = Instant::now();
        let sent = self.with_program(name, "generated", tx_share, |run| {
            // Each call has a setup cost (its page pool): make calls long.
            while start.elapsed() < secs {
                run(1 << 20)?;
            }
            Ok(())
        })?;
        Ok(sent as f64 / start.elapsed().as_secs_f64())
    }

    /// Loads generator program `name` in the client namespace, on the generator CPU, and calls
    /// `body` with a function that runs it for that many live frames. Returns the word in map
    /// `result` after: frames transmitted (`generated`), or the data address (`alignment`).
    fn with_program(
        &self,
        name: &str,
        result: &'static str,
        tx_share: u32,
        body: impl FnOnce(&mut dyn FnMut(u32) -> Result<()>) -> Result<()> + Send,
    ) -> Result<u64> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<u64> {
                enter(&self.client_ns)?;
                set_cpu(0, GENERATOR_CPU)?;
                pin_napi_threads(&self.server_if, RECEIVER_CPU)?;
                let mut ebpf = EbpfLoader::new()
                    .override_global("TX_SHARE", &tx_share, true)
                    .override_global("HEAD_PAD", &self.pad, true)
                    .override_global("LAB_VISITORS", &LAB_VISITORS, true)
                    .override_global("SYN_TEMPLATE", &self.syn_template()?, true)
                    .load(BASELINE_OBJECT)?;
                let prog: &mut Xdp =
                    ebpf.program_mut(name).context(name.to_string())?.try_into()?;
                prog.load()?;
                let ifname = std::ffi::CString::new(self.client_if.as_str())?;
                // SAFETY: NUL-terminated name; in the client namespace now.
                let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex. data_end must be the frame's length; XDP_TX leaves through
                // the ingress interface.
                let frame = if name.ends_with("_v6") {
                    &self.frame_v6
                } else if name.ends_with("_syn") {
                    &self.frame_syn
                } else {
                    &self.frame
                };
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                body(&mut |repeat| {
                    let mut opts = TestRunOptions::new();
                    opts.data_in = Some(frame);
                    opts.ctx_in = Some(&ctx);
                    opts.repeat = repeat;
                    opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
                    prog.test_run(opts).context("BPF_PROG_TEST_RUN (live frames)")?;
                    Ok(())
                })?;
                let word: aya::maps::Array<_, u64> =
                    aya::maps::Array::try_from(ebpf.map(result).context(result)?)?;
                Ok(word.get(&0, 0)?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))?
        })
    }
}
