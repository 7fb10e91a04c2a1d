//! What the kernel reports through its ring buffers: sampled drops (for `edge top`) and
//! completed handshakes (for visitor learning). Each ring is drained by a thread of its own
//! every 200 ms; the kernel writes without waking anyone, so a flood costs the daemon a
//! bounded amount of work (the ring's size per drain) and never a syscall per packet.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use edge_common::{
    events::{DropEvent, Handshake},
    keys::Addr,
    maps as names,
    reason::REASON_NAMES,
};
use tracing::{debug, info, warn};

use super::{
    handle::Handle,
    top::{show, Top},
};

const DRAIN_EVERY: Duration = Duration::from_millis(200);
/// Peers waiting to be recorded while the daemon cannot take them (not ready, busy).
const MAX_PENDING_PEERS: usize = 100_000;

fn open_ring(iface: &str, name: &str) -> crate::Result<RingBuf<MapData>> {
    let path = crate::filter::pin_dir(iface)?.join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| crate::error::kernel(format!("opening {}", path.display()), e))?;
    RingBuf::try_from(Map::RingBuf(data))
        .map_err(|e| crate::error::kernel(format!("{} is not a ring buffer", path.display()), e))
}

/// Drains `ring` forever, handing each record to `each`, then `after_drain` once per drain.
fn drain<T: Copy>(mut ring: RingBuf<MapData>, mut each: impl FnMut(T), mut after: impl FnMut()) {
    loop {
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<T>() {
                // SAFETY: the kernel wrote a `T` (repr(C), plain data); read unaligned.
                each(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const T) });
            }
        }
        after();
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// Starts the drop sampler's reader on the shared ring (pinned under `iface`).
pub fn read_drops(iface: &str, top: Arc<Mutex<Top>>) -> crate::Result<()> {
    let ring = open_ring(iface, names::DROP_EVENTS)?;
    std::thread::Builder::new()
        .name("edge-drops".into())
        .spawn(move || {
            drain::<DropEvent>(
                ring,
                |event| {
                    debug!(
                        target: "edge::events",
                        src = %show(&event.src),
                        reason = REASON_NAMES.get(event.reason as usize).copied().unwrap_or("?"),
                        would_drop = event.would_drop != 0,
                        "sampled drop"
                    );
                    top.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now(), event);
                },
                || {},
            )
        })
        .map_err(|e| crate::Error::Kernel { what: "starting the drop reader".into(), source: e })?;
    Ok(())
}

/// Starts visitor learning: reads completed handshakes and records their peers as today's
/// visitors through the daemon's one path for visits (store first, then the kernel), once per
/// drain. The kernel reports only this network namespace's sockets; of those, only handshakes
/// to an address of one of `interfaces` count (a connection to loopback or to another
/// interface's address did not come through the filter). Peers already seen today are not
/// written again.
pub fn learn_handshakes(
    pins: &str,
    interfaces: Vec<String>,
    handle: Handle,
    runtime: tokio::runtime::Handle,
) -> crate::Result<()> {
    let ring = open_ring(pins, names::HANDSHAKES)?;
    let batch = std::cell::RefCell::new(HashSet::<Addr>::new());
    let mut ours: HashSet<std::net::IpAddr> = HashSet::new();
    let mut ours_at = Instant::now() - DRAIN_EVERY * 10;
    std::thread::Builder::new()
        .name("edge-learning".into())
        .spawn(move || {
            drain::<Handshake>(
                ring,
                |h| {
                    // The interfaces' addresses, read again now and then (they can change).
                    if ours_at.elapsed() >= DRAIN_EVERY * 5 {
                        ours = crate::ifaddrs::all()
                            .into_iter()
                            .filter(|(name, _)| interfaces.contains(name))
                            .map(|(_, addr)| addr)
                            .collect();
                        ours_at = Instant::now();
                    }
                    if ours.contains(&crate::visitors::plain_ip(&h.local)) {
                        batch.borrow_mut().insert(h.peer);
                    }
                },
                || {
                    let peers: Vec<Addr> = batch.borrow_mut().drain().collect();
                    if peers.is_empty() {
                        return;
                    }
                    let learned = runtime.block_on(handle.with({
                        let peers = peers.clone();
                        move |core| core.learn(&peers)
                    }));
                    match learned {
                        Ok(0) => {}
                        Ok(n) => info!(learned = n, "visitors learned from completed handshakes"),
                        // Not ready (an interface waiting) or busy: kept for the next drain,
                        // up to a bound (a ring's worth of new peers per drain at most).
                        Err(status) => {
                            warn!("learning postponed: {}", status.message());
                            let mut batch = batch.borrow_mut();
                            if batch.len() < MAX_PENDING_PEERS {
                                batch.extend(peers);
                            }
                        }
                    }
                },
            )
        })
        .map_err(|e| crate::Error::Kernel {
            what: "starting the learning reader".into(),
            source: e,
        })?;
    Ok(())
}

/// Checks the tracepoint's record layout against the offsets the kernel program reads, so a
/// kernel that moved a field is refused rather than misread.
pub fn check_tracepoint_format() -> Result<(), String> {
    const FORMAT: &str = "/sys/kernel/tracing/events/sock/inet_sock_set_state/format";
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        let (fs, target) = (c"tracefs", c"/sys/kernel/tracing");
        // SAFETY: valid NUL-terminated strings; failing leaves the read below to explain.
        unsafe { libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    }
    let text = std::fs::read_to_string(FORMAT)
        .map_err(|e| format!("{FORMAT}: {e} (the sock:inet_sock_set_state tracepoint)"))?;
    check_format(&text).map_err(|e| format!("{FORMAT}: {e}"))
}

fn check_format(text: &str) -> Result<(), String> {
    use edge_common::events::tracepoint as tp;
    for (field, offset) in [
        ("const void * skaddr", tp::SKADDR),
        ("int oldstate", tp::OLDSTATE),
        ("int newstate", tp::NEWSTATE),
        ("__u16 sport", tp::SPORT),
        ("__u16 family", tp::FAMILY),
        ("__u16 protocol", tp::PROTOCOL),
        ("__u8 saddr[4]", tp::SADDR),
        ("__u8 daddr[4]", tp::DADDR),
        ("__u8 saddr_v6[16]", tp::SADDR_V6),
        ("__u8 daddr_v6[16]", tp::DADDR_V6),
    ] {
        let want = format!("field:{field};\toffset:{offset};");
        if !text.contains(&want) {
            return Err(format!("`{field}` is not at offset {offset}: learning stays off"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_tracepoint_matches_the_offsets() {
        assert!(check_format("field:int oldstate;\toffset:99;").is_err());
        // Reading the running kernel's format needs tracefs (mounted if it is not): root.
        if std::env::var("EDGE_SKIP_PRIVILEGED").is_ok_and(|v| v == "1") {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED the running kernel's tracepoint format");
            return;
        }
        // A moved field, or a tracefs that cannot be read, fails here first.
        check_tracepoint_format().unwrap();
    }
}
