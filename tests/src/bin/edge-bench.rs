//! `cargo xtask bench`: the real program in the kernel (BPF_PROG_TEST_RUN), side by side with
//! an empty XDP program and a one-lookup whitelist on a plain preallocated hash map, in one run.
//!
//! Same-packet cases: test_run with repeat = 1,000,000, median of 5 runs. Random-source cases
//! (a spoofed flood: a distinct source per packet, caches cold): one test_run per packet over
//! 200,000 frames, whose kernel-measured times are summed; their ratios are to the empty
//! program measured the same way (`empty_per_call`).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    EbpfLoader,
};
use edge::{
    filter::kernel_config,
    import::{self, Format},
    ticket::{self, Key, Keyring},
    Day, Filter, Policy,
};
use edge_tests::{
    cores,
    frames::{frame, L4},
    BASELINE_OBJECT,
};

const VISITORS: u32 = 20_000_000;
const REPEAT: u32 = 1_000_000;
const RUNS: usize = 5;
const FLOOD_FRAMES: usize = 200_000;

const POLICY: &str = r#"
mode = "enforce"
[lists]
allow = ["198.51.100.0/24", "2001:db8:a::/48"]
deny = ["203.0.113.0/24", "2001:db8:dead::/48"]
"#;

/// Visitors of the concentrated-whitelist flood cases.
const CONCENTRATED: u32 = 1_000_000;

/// Prefixes of each family in each list for the big-lists cases.
const LIST_RULES: u32 = 10_000;

/// The bench policy with LIST_RULES more IPv4 /24s and IPv6 /48s in each list, spread over the
/// IPv4 space and over 2a00::/12.
fn large_lists() -> Result<Policy> {
    let spread = |i: u32, odd: u32| {
        let net = std::net::Ipv4Addr::from(i.wrapping_mul(odd) & 0xffff_ff00 | 0x0100_0000);
        format!("\"{net}/24\"")
    };
    let spread_v6 = |i: u32, odd: u32| {
        let h = i.wrapping_mul(odd);
        format!("\"2a0{:x}:{:x}:{:x}::/48\"", h >> 28, (h >> 12) & 0xffff, h & 0xfff)
    };
    let list = |odd: u32, odd_v6: u32| -> Vec<String> {
        (0..LIST_RULES).flat_map(|i| [spread(i, odd), spread_v6(i, odd_v6)]).collect()
    };
    let allow = list(2_654_435_761, 3_266_489_917);
    let deny = list(2_246_822_519, 668_265_263);
    let text = format!(
        "mode = \"enforce\"\n[lists]\nallow = [\"198.51.100.0/24\", {}]\n\
         deny = [\"203.0.113.0/24\", {}]\n",
        allow.join(", "),
        deny.join(", ")
    );
    Ok(Policy::parse(&text, "bench-large-lists.toml", Path::new("."))?)
}

/// Knocks on: the kernel then looks admissions up for every unknown source, so only the knock
/// cases run with it.
const KNOCK: &str = "[admission]\nkeys = \"set-directly-by-the-bench\"\nknock_port = 7000\n";

/// The i-th benchmark visitor: multiplying by an odd constant permutes u32, so all are distinct
/// and spread over the whole IPv4 space.
fn visitor(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761)
}

/// The bench's 20 M IPv4 visitors into the bitmap, through the library's mmap.
fn load_visitors(filter: &Filter) {
    let bitmap = filter.maps.visitors_v4();
    for i in 0..VISITORS {
        bitmap.insert(visitor(i).into());
    }
}

/// Fails the bench if `frame` is not judged a visitor: a case named for visitors must measure
/// a visitor (a policy applied with its own history would have cleared them).
fn expect_visitor(filter: &mut Filter, frame: &[u8]) -> Result<()> {
    let judged = filter.judge(frame)?;
    anyhow::ensure!(
        judged.reason == edge_common::reason::VISITOR,
        "the bench's visitor frame is judged {}, not a visitor",
        judged.reason_name()
    );
    Ok(())
}

/// xorshift: random sources for the flood, reproducible between runs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

fn test_run(prog: &mut Xdp, frame: &[u8], repeat: u32) -> Result<Duration> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    Ok(prog.test_run(opts).context("BPF_PROG_TEST_RUN")?.duration)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median ns/packet over RUNS runs of REPEAT.
fn same_packet(mut run: impl FnMut(&[u8], u32) -> Result<Duration>, frame: &[u8]) -> Result<f64> {
    let runs = (0..RUNS)
        .map(|_| run(frame, REPEAT).map(|d| d.as_nanos() as f64))
        .collect::<Result<_>>()?;
    Ok(median(runs))
}

/// Mean ns/packet, one call per distinct frame; median over RUNS passes.
fn per_call(
    mut run: impl FnMut(&[u8], u32) -> Result<Duration>,
    frames: &[Vec<u8>],
) -> Result<f64> {
    let mut passes = Vec::new();
    for _ in 0..RUNS {
        let mut total = 0u128;
        for f in frames {
            total += run(f, 1)?.as_nanos();
        }
        passes.push(total as f64 / frames.len() as f64);
    }
    Ok(median(passes))
}

/// Fills a hash map with BPF_MAP_UPDATE_BATCH (the fastest way userspace has to fill one).
fn batch_fill(map_fd: i32, keys: &[[u8; 4]]) -> Result<()> {
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let values = vec![1u8; 100_000];
    for chunk in keys.chunks(100_000) {
        let mut attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: chunk.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map_fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: attr points at live key/value buffers of `count` elements.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("BPF_MAP_UPDATE_BATCH");
        }
    }
    Ok(())
}

fn fdinfo_memlock(fd: i32) -> Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:").and_then(|v| v.trim().parse().ok()))
        .context("memlock")
}

struct Report {
    json: bool,
    empty: f64,
    empty_per_call: f64,
}

impl Report {
    fn cores(&self, case: &str, alone: f64, together: f64) {
        let ratio = together / alone;
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "case": format!("two_cpus_{case}"), "ns_one_cpu": (alone * 10.0).round() / 10.0, "ns_two_cpus": (together * 10.0).round() / 10.0, "ratio": (ratio * 100.0).round() / 100.0 })
            );
        } else {
            println!("  {case:<26} {alone:>9.1} {together:>9.1} {ratio:>7.2}");
        }
    }

    fn case(&self, case: &str, ns: f64, per_call: bool) {
        let floor = if per_call { self.empty_per_call } else { self.empty };
        let ratio = ns / floor;
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "case": case, "ns_per_packet": (ns * 10.0).round() / 10.0, "ratio": (ratio * 100.0).round() / 100.0 })
            );
        } else {
            let basis = if per_call { "x empty_per_call" } else { "x empty" };
            println!("  {case:<22} {ns:>9.1} ns/packet  {ratio:>6.2} {basis}");
        }
    }
}

/// The unknown budgets of a two-CPU case: the bench policy's, unlimited, or none at all.
#[derive(Clone, Copy)]
enum Unknown {
    Bench,
    Open,
    Closed,
}

/// One two-CPU case: the program, what each CPU runs (each frame `repeat` times), and the
/// unknown budgets it runs under.
struct OnTwoCpus<'a> {
    name: &'a str,
    program: i32,
    frames: [&'a [Vec<u8>]; 2],
    repeat: u32,
    unknown: Unknown,
}

impl<'a> OnTwoCpus<'a> {
    fn new(
        name: &'a str,
        program: i32,
        frames: [&'a [Vec<u8>]; 2],
        repeat: u32,
        unknown: Unknown,
    ) -> Self {
        Self { name, program, frames, repeat, unknown }
    }
}

/// Median ns/packet of `case` on CPU 0 alone and on CPUs 0 and 1 at once (the mean of the
/// two), each run from fresh budgets.
fn alone_and_together(filter: &mut Filter, case: &OnTwoCpus) -> Result<(f64, f64)> {
    let (mut alone, mut together) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        filter.maps.reset_budgets()?;
        alone.push(cores::on_cpus(case.program, &[0], &case.frames[..1], case.repeat)?[0]);
        filter.maps.reset_budgets()?;
        let both = cores::on_cpus(case.program, &[0, 1], &case.frames, case.repeat)?;
        together.push((both[0] + both[1]) / 2.0);
    }
    Ok((median(alone), median(together)))
}

/// The same cases on both CPUs at once against one CPU alone (`cores::on_cpus`), in one run.
/// The one-lookup anchor and the empty program show what the machine itself loses running two
/// (two vCPUs may be hyperthreads of one core); edge's cases lose more only where they write
/// shared state: a source's bucket when the same source passes on both CPUs, the bucket table
/// when new sources pass, or where both miss in the same large map at once.
fn two_cpus(
    filter: &mut Filter,
    baseline: &mut aya::Ebpf,
    visitor: &[u8],
    unknown: &[u8],
    flood: &[Vec<u8>],
    report: &Report,
) -> Result<()> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    const REPEAT_EACH: u32 = 200_000;
    let mut fd = |name: &str| -> Result<i32> {
        let prog: &mut Xdp = baseline.program_mut(name).context(name.to_string())?.try_into()?;
        Ok(prog.fd()?.as_fd().as_raw_fd())
    };
    let (anchor, empty) = (fd("anchor_hash")?, fd("empty")?);
    let edge = filter.program_fd()?.as_raw_fd();
    let (visitor, unknown) = ([visitor.to_vec()], [unknown.to_vec()]);
    let own_source = [frame("192.0.2.100", L4::Tcp(443)).build()];
    let (a, b) = flood.split_at(flood.len() / 2);
    let case = OnTwoCpus::new;
    let cases = [
        case("anchor_hash_unknown", anchor, [&unknown, &unknown], REPEAT_EACH, Unknown::Bench),
        case("empty_per_call", empty, [a, b], 1, Unknown::Bench),
        case("anchor_hash_random", anchor, [a, b], 1, Unknown::Bench),
        case("visitor_v4", edge, [&visitor, &visitor], REPEAT_EACH, Unknown::Bench),
        case("unknown_drop", edge, [&unknown, &unknown], REPEAT_EACH, Unknown::Bench),
        case("unknown_pass_one_source", edge, [&unknown, &unknown], REPEAT_EACH, Unknown::Open),
        case("unknown_pass_own_sources", edge, [&unknown, &own_source], REPEAT_EACH, Unknown::Open),
        case("flood_random_source", edge, [a, b], 1, Unknown::Bench),
        case("flood_random_no_budget", edge, [a, b], 1, Unknown::Closed),
        case("flood_random_pass", edge, [a, b], 1, Unknown::Open),
    ];
    let policy = |unknown: &str| {
        Policy::parse(&format!("{POLICY}\n{unknown}"), "bench.toml", Path::new("."))
    };
    let open = policy("[unknown]\nrate_pps = 1000000000\nburst = 1000000000\nglobal_pps = 1000000000\nglobal_burst = 1000000000\n")?;
    let closed = policy("[unknown]\nrate_pps = 0\nglobal_pps = 0\n")?;
    let bench = policy("")?;
    expect_visitor(filter, &visitor[0])?;
    if !report.json {
        println!("\nboth CPUs at once against one alone (ns/packet each; median of {RUNS}):");
        println!("  {:<26} {:>9} {:>9} {:>7}", "case", "one CPU", "two CPUs", "ratio");
    }
    for case in &cases {
        let policy = match case.unknown {
            Unknown::Bench => &bench,
            Unknown::Open => &open,
            Unknown::Closed => &closed,
        };
        filter.maps.set_config(kernel_config(policy))?;
        let (alone, together) = alone_and_together(filter, case)?;
        report.cores(case.name, alone, together);
    }
    Ok(())
}

/// Calls per SYN cookie case.
const COOKIE_CALLS: usize = 20_000;

/// The SYN cookie cases, in a thread moved to a network namespace of its own (the program
/// looks listeners up in the test run's namespace) with a listener on port 443 and
/// `tcp_syncookies = 2`: the reply to a visitor's SYN beside an unknown source's drop, and the
/// check of a valid cookie beside a visitor's pass, each frame run once per call.
fn syn_cookies(
    filter: &mut Filter,
    report: &Report,
    visitor_syn: &[u8],
    unknown: &[u8],
) -> Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                // SAFETY: plain syscall; it moves only this thread.
                anyhow::ensure!(unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0, "unshare");
                std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")?;
                let listener = std::net::TcpListener::bind("[::]:443")?;
                let calls = |frame: &[u8]| vec![frame.to_vec(); COOKIE_CALLS];
                let run = |filter: &mut Filter, frames: &[Vec<u8>]| -> Result<f64> {
                    filter.maps.reset_budgets()?;
                    per_call(|f, r| Ok(filter.run(f, r)?.1), frames)
                };
                let drop = run(filter, &calls(unknown))?;
                let visitor = run(filter, &calls(visitor_syn))?;
                let on = Policy::parse(
                    &format!(
                        "{POLICY}\n[syn_cookies]\nmode = \"always\"\nreply_pps = 1000000000\n\
                         reply_burst = 1000000000\n[daemon]\ninterfaces = [\"lo\"]\n"
                    ),
                    "bench.toml",
                    Path::new("."),
                )?;
                filter.maps.set_config(kernel_config(&on))?;
                let (action, answer) = filter.run_and_read(visitor_syn)?;
                anyhow::ensure!(action == edge::filter::XDP_TX, "the SYN was not answered");
                // The ACK that brings the cookie back: the SYN's frame (no options) with ACK
                // instead of SYN, the next sequence number and the cookie plus one.
                let tcp = 14 + 20;
                let cookie = u32::from_be_bytes(answer[tcp + 4..tcp + 8].try_into()?);
                let mut ack = visitor_syn.to_vec();
                let seq = u32::from_be_bytes(ack[tcp + 4..tcp + 8].try_into()?);
                ack[tcp + 4..tcp + 8].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
                ack[tcp + 8..tcp + 12].copy_from_slice(&cookie.wrapping_add(1).to_be_bytes());
                ack[tcp + 13] = 0x10;
                let judged = filter.judge(&ack)?;
                anyhow::ensure!(
                    judged.reason == edge_common::reason::COOKIE_VALID,
                    "the bench's ACK is judged {}",
                    judged.reason_name()
                );
                let reply = run(filter, &calls(visitor_syn))?;
                let valid = run(filter, &calls(&ack))?;
                // A packet of an established connection: a real one over loopback (a child
                // process shares this thread's namespace), its ACK run with cookies on, where
                // it pays the socket lookup, and off.
                let up =
                    std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
                anyhow::ensure!(up.success(), "ip link set lo up");
                let client = std::net::TcpStream::connect("127.0.0.1:443")?;
                let (_server, _) = listener.accept()?;
                // Its source allowed: an unknown one over its budget is dropped before any
                // cookie work, which would measure nothing here.
                let loopback: ipnet::IpNet = "127.0.0.1/32".parse()?;
                filter.maps.insert_rules(edge::policy::List::Allow, &[loopback])?;
                let established = established_ack(client.local_addr()?.port())?;
                let on_established = run(filter, &calls(&established))?;
                let before = filter.judge(&established)?.reason;
                filter.maps.set_config(kernel_config(&Policy::parse(
                    POLICY,
                    "bench.toml",
                    Path::new("."),
                )?))?;
                let off_established = run(filter, &calls(&established))?;
                anyhow::ensure!(
                    before == edge_common::reason::ALLOW
                        && filter.judge(&established)?.reason == before,
                    "the established ACK is judged allowed with cookies on and off"
                );
                filter.maps.remove_rules(edge::policy::List::Allow, &[loopback])?;
                report.case("unknown_drop_per_call", drop, true);
                report.case("syn_cookie_reply", reply, true);
                report.case("visitor_per_call", visitor, true);
                report.case("cookie_valid", valid, true);
                report.case("established_ack_cookies_off", off_established, true);
                report.case("established_ack_cookies_on", on_established, true);
                if !report.json {
                    println!("  syn_cookie_reply / unknown_drop_per_call = {:.2}", reply / drop);
                    println!("  cookie_valid / visitor_per_call = {:.2}", valid / visitor);
                    println!(
                        "  established_ack_cookies_on / _off = {:.2}",
                        on_established / off_established
                    );
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A SYN from `src` to port 443 with the options Linux sends (MSS, SACK-permitted,
/// timestamps, window scale), as a real client's.
fn linux_syn(src: &str) -> Result<Vec<u8>> {
    use etherparse::TcpOptionElement::*;
    let src: std::net::Ipv4Addr = src.parse()?;
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), edge_tests::frames::DST_V4, 64)
        .tcp(40_000, 443, 1, 64_240)
        .syn()
        .options(&[
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(123_456, 0),
            Noop,
            WindowScale(7),
        ])?;
    let mut frame = Vec::new();
    builder.write(&mut frame, &[])?;
    Ok(frame)
}

/// An ACK of the loopback connection from `client_port` to port 443, as a frame.
fn established_ack(client_port: u16) -> Result<Vec<u8>> {
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(client_port, 443, 1_000, 512)
        .ack(2_000);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0; 8])?;
    Ok(frame)
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let say = |s: &str| {
        if !json {
            println!("{s}")
        }
    };

    let mut filter = Filter::load()?;
    let today = Day::today_utc();
    let history = import::parse("2001:db8:1:2::10\n", "bench", Format::Csv, today)?;
    let policy = Policy::parse(POLICY, "bench.toml", Path::new("."))?;
    filter.maps.apply(&policy, &history, today)?;

    // 20M IPv4 visitors into the bitmap, through the library's mmap.
    say(&format!("loading {VISITORS} IPv4 visitors..."));
    let start = Instant::now();
    load_visitors(&filter);
    let load_s = start.elapsed().as_secs_f64();
    let bitmap_bytes = filter.maps.kernel_bytes(edge_common::maps::VISITORS_V4)?;

    // The anchor: the same 20M in a preallocated hash map.
    say("loading the same 20M into a preallocated hash map (the anchor)...");
    let mut baseline =
        EbpfLoader::new().map_max_entries("anchor_v4", VISITORS).load(BASELINE_OBJECT)?;
    for name in ["empty", "anchor_hash"] {
        let prog: &mut Xdp = baseline.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    let anchor_map = baseline.map("anchor_v4").context("anchor_v4")?;
    let anchor_fd = match anchor_map {
        aya::maps::Map::HashMap(d) => {
            use std::os::fd::{AsFd, AsRawFd};
            d.fd().as_fd().as_raw_fd()
        }
        _ => anyhow::bail!("anchor_v4 is not a hash map"),
    };
    let keys: Vec<[u8; 4]> = (0..VISITORS).map(|i| visitor(i).to_be_bytes()).collect();
    let start = Instant::now();
    batch_fill(anchor_fd, &keys)?;
    let anchor_load_s = start.elapsed().as_secs_f64();
    let anchor_bytes = fdinfo_memlock(anchor_fd)?;
    drop(keys);

    let mut empty_prog = |f: &[u8], r: u32| {
        let p: &mut Xdp = baseline.program_mut("empty").unwrap().try_into().unwrap();
        test_run(p, f, r)
    };
    let v4_visitor = std::net::Ipv4Addr::from(visitor(12_345)).to_string();
    // Knocks: the ticket is verified in full (SipHash over 40 bytes) on every run.
    let ring = Keyring::new(vec![Key::new(1, [7; 16])]);
    filter.maps.set_ticket_keys(Some(&ring))?;
    let not_after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
    let ticket = ticket::issue(ring.current(), "192.0.2.77".parse()?, not_after, 1);
    let knock = frame("192.0.2.77", L4::Udp(7000)).payload_bytes(&ticket.0).build();
    let mut altered = ticket;
    altered.0[47] ^= 1;
    let bad_knock = frame("192.0.2.77", L4::Udp(7000)).payload_bytes(&altered.0).build();
    let frames = [
        ("visitor_v4", frame(&v4_visitor, L4::Tcp(443)).build()),
        ("visitor_v6", frame("2001:db8:1:2::99", L4::Tcp(443)).build()),
        ("allow", frame("198.51.100.7", L4::Tcp(443)).build()),
        ("deny", frame("203.0.113.7", L4::Tcp(443)).build()),
        ("unknown_drop", frame("192.0.2.99", L4::Tcp(443)).build()),
        ("malformed", frame("192.0.2.99", L4::Tcp(443)).build()[..40].to_vec()),
    ];
    let empty = same_packet(&mut empty_prog, &frames[0].1)?;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let flood: Vec<Vec<u8>> = (0..FLOOD_FRAMES)
        .map(|_| frame(&std::net::Ipv4Addr::from(rng.next()).to_string(), L4::Tcp(443)).build())
        .collect();
    let empty_per_call = per_call(&mut empty_prog, &flood)?;
    let report = Report { json, empty, empty_per_call };

    say(&format!("\nper packet, BPF_PROG_TEST_RUN (repeat {REPEAT}, median of {RUNS}):"));
    report.case("empty", empty, false);
    expect_visitor(&mut filter, &frames[0].1)?;
    for (case, f) in &frames {
        // Each case starts from fresh budgets; unknown_drop is one abusive source over its bucket.
        filter.maps.reset_budgets()?;
        let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), f)?;
        report.case(case, ns, false);
    }
    // The one-lookup yardstick on the same unknown frame: what a trivial whitelist costs with
    // the source hot, beside unknown_drop (edge's whole pipeline for it).
    let mut anchor_prog = |f: &[u8], r: u32| {
        let p: &mut Xdp = baseline.program_mut("anchor_hash").unwrap().try_into().unwrap();
        test_run(p, f, r)
    };
    let ns = same_packet(&mut anchor_prog, &frames[4].1)?;
    report.case("anchor_hash_unknown", ns, false);
    let open = Policy::parse(&format!("{POLICY}\n[unknown]\nrate_pps = 1000000000\nburst = 1000000000\nglobal_pps = 1000000000\nglobal_burst = 1000000000\n"), "bench.toml", Path::new("."))?;
    // Only the config changes between cases: `apply` would make the visitor bitmap match
    // `history`, clearing the 20 M loaded above.
    filter.maps.set_config(kernel_config(&open))?;
    filter.maps.reset_budgets()?;
    let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), &frames[4].1)?;
    report.case("unknown_pass", ns, false);
    let knocking = Policy::parse(&format!("{POLICY}\n{KNOCK}"), "bench.toml", Path::new("."))?;
    filter.maps.set_config(kernel_config(&knocking))?;
    for (case, f) in [("knock_ok", &knock), ("knock_bad_hash", &bad_knock)] {
        let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), f)?;
        report.case(case, ns, false);
    }
    // The knock admitted 192.0.2.77: take it back, or the flood below would pay an admitted
    // lookup per packet that the other cases do not.
    filter.maps.revoke("192.0.2.77".parse()?)?;
    filter.maps.set_config(kernel_config(&policy))?;
    expect_visitor(&mut filter, &frames[0].1)?;

    say("\nSYN cookies, one call per packet (a reply changes its frame, so no repeats):");
    syn_cookies(&mut filter, &report, &linux_syn(&v4_visitor)?, &frames[4].1)?;
    filter.maps.set_config(kernel_config(&policy))?;

    say(&format!(
        "\nrandom sources, one packet per source ({FLOOD_FRAMES} frames, median of {RUNS} passes):"
    ));
    report.case("empty_per_call", empty_per_call, true);
    filter.maps.reset_budgets()?;
    let flood_ns = per_call(|f, r| Ok(filter.run(f, r)?.1), &flood)?;
    report.case("flood_random_source", flood_ns, true);
    let ns = per_call(&mut anchor_prog, &flood)?;
    report.case("anchor_hash_random", ns, true);
    say(&format!("  flood_random_source / anchor_hash_random = {:.2}", flood_ns / ns));

    two_cpus(&mut filter, &mut baseline, &frames[0].1, &frames[4].1, &flood, &report)?;
    filter.maps.set_config(kernel_config(&policy))?;

    // Large lists, as a threat feed makes them: every verdict looks in both tries first, and
    // an IPv4 source goes into a trie only when a listed prefix touches its /24.
    say(&format!(
        "\nwith {LIST_RULES} IPv4 /24s and {LIST_RULES} IPv6 /48s in each of deny and allow:"
    ));
    filter.maps.apply(&large_lists()?, &history, today)?;
    load_visitors(&filter);
    expect_visitor(&mut filter, &frames[0].1)?;
    filter.maps.reset_budgets()?;
    let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), &frames[0].1)?;
    report.case("visitor_v4_big_lists", ns, false);
    let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), &frames[1].1)?;
    report.case("visitor_v6_big_lists", ns, false);
    let ns = same_packet(|f, r| Ok(filter.run(f, r)?.1), &frames[4].1)?;
    report.case("unknown_drop_big_lists", ns, false);
    filter.maps.reset_budgets()?;
    let ns = per_call(|f, r| Ok(filter.run(f, r)?.1), &flood)?;
    report.case("flood_big_lists", ns, true);
    say(&format!("  flood_big_lists / flood_random_source = {:.2}", ns / flood_ns));
    filter.maps.apply(&policy, &history, today)?;

    // Real visitor sets are concentrated (a national site's in its country's blocks); here
    // 1 M visitors in 128.0.0.0/2, as in the lab, under the same whole-space flood. Most of
    // the flood falls in /16s with no visitor, decided by the 8 KiB /16 summary. Side by side:
    // the same after marking one address in every /16, so only the /24 summary decides. No
    // allow or deny list, as in the lab: a list's bits are read for every source.
    say(&format!("\nwith {CONCENTRATED} IPv4 visitors in 128.0.0.0/2, no lists (a fresh filter):"));
    drop(filter);
    let mut filter = Filter::load()?;
    let no_lists = Policy::parse("mode = \"enforce\"\n", "bench-no-lists.toml", Path::new("."))?;
    filter.maps.apply(&no_lists, &history, today)?;
    let bitmap = filter.maps.visitors_v4();
    (0..CONCENTRATED).for_each(|i| bitmap.insert((visitor(i) & 0x3fff_ffff | 0x8000_0000).into()));
    let concentrated = per_call(|f, r| Ok(filter.run(f, r)?.1), &flood)?;
    report.case("flood_concentrated", concentrated, true);
    // The same flood on both CPUs at once: mostly decided from cache-resident summaries, so
    // what two CPUs cost each other here is the pipeline's own shared state, not the memory
    // the 20 M whole-space visitors make every packet miss in.
    let program = {
        use std::os::fd::AsRawFd as _;
        filter.program_fd()?.as_raw_fd()
    };
    let (a, b) = flood.split_at(flood.len() / 2);
    let case = OnTwoCpus::new("flood_concentrated", program, [a, b], 1, Unknown::Bench);
    let (alone, together) = alone_and_together(&mut filter, &case)?;
    report.cores(case.name, alone, together);
    let bitmap = filter.maps.visitors_v4();
    (0..1u32 << 16).for_each(|block| bitmap.insert((block << 16 | 0xfe).into()));
    let ns = per_call(|f, r| Ok(filter.run(f, r)?.1), &flood)?;
    report.case("flood_concentrated_every_16", ns, true);
    say(&format!("  flood_concentrated / flood_concentrated_every_16 = {:.2}", concentrated / ns));

    let per_visitor = bitmap_bytes as f64 / f64::from(VISITORS);
    let anchor_per = anchor_bytes as f64 / f64::from(VISITORS);
    if json {
        println!(
            "{}",
            serde_json::json!({ "case": "load_20m_visitors", "seconds": (load_s * 1000.0).round() / 1000.0, "kernel_bytes_per_visitor": (per_visitor * 10.0).round() / 10.0 })
        );
        println!(
            "{}",
            serde_json::json!({ "case": "load_20m_anchor_hash", "seconds": (anchor_load_s * 1000.0).round() / 1000.0, "kernel_bytes_per_visitor": (anchor_per * 10.0).round() / 10.0 })
        );
    } else {
        println!("\nloading {VISITORS} IPv4 visitors:");
        println!("  edge bitmap (mmap)     {load_s:>7.3} s  {per_visitor:>6.1} B/visitor  ({} MiB, flat)", bitmap_bytes >> 20);
        println!("  anchor hash (batch)    {anchor_load_s:>7.3} s  {anchor_per:>6.1} B/visitor  ({} MiB)", anchor_bytes >> 20);
    }
    Ok(())
}
