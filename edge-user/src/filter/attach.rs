//! Putting the program on an interface: loaded for it against the shared maps, then attached,
//! or swapped into the link a running filter holds (hitless); and the handshake tracepoint.
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, XdpMode},
    Ebpf, EbpfLoader,
};
use edge_common::maps as names;

use super::{
    load_error,
    maps::{Counters, Maps},
    pins::{attached_dir, if_index, pin_dir, pinned_link_live},
    program, PROGRAM_OBJECT, SHARED_MAPS,
};
use crate::error::{errno, kernel, Error, Result};

/// Puts a daemon's filter on `iface`, against maps it shares with its other interfaces: the
/// shared maps are pinned in the interface's directory, and a program loaded for it uses them
/// and its own counters (kept from an earlier run if pinned). If a filter is attached already,
/// the new program replaces it in the pinned link, atomically (BPF_LINK_UPDATE): there is no
/// moment without a filter, which makes restarts and binary upgrades hitless. Otherwise it is
/// attached and the link pinned. Returns the counters and whether a running filter was
/// replaced. The maps must be filled before: the program never runs with empty maps.
pub fn attach_shared(maps: &Maps, iface: &str, mode: XdpMode) -> Result<(Counters, bool)> {
    attach_loaded(maps, load_for(maps, iface)?, iface, mode)
}

/// The program loaded (verified) for `iface` against `maps` and the interface's counters, not
/// attached: what [`attach_loaded`] attaches in a few system calls. The daemon keeps one ready
/// per interface, so an interface that is deleted and made again is filtered again as soon as
/// the kernel says it exists, not a program load (tens of milliseconds) later.
pub struct Loaded {
    ebpf: Ebpf,
}

/// Loads the program for `iface` (see [`Loaded`]); pins the shared maps in its directory.
pub fn load_for(maps: &Maps, iface: &str) -> Result<Loaded> {
    let dir = pin_dir(iface)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Kernel { what: format!("creating {}", dir.display()), source: e })?;
    maps.pin_shared(&dir)?;
    renew_counters_of_another_layout(&dir)?;
    let mut loader = EbpfLoader::new();
    for name in SHARED_MAPS.iter().chain([&names::STATS]) {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
    program(&mut ebpf)?.load().map_err(|e| load_error(&e))?;
    Ok(Loaded { ebpf })
}

/// Unpins the interface's counters if an earlier build laid them out otherwise (it counted
/// fewer reasons): loading would reuse the pin as it is, and count this build's reasons in the
/// wrong places or nowhere. Counting starts over from zero (a counter reset to Prometheus).
fn renew_counters_of_another_layout(dir: &std::path::Path) -> Result<()> {
    let path = dir.join(names::STATS);
    let Ok(pinned) = MapData::from_pin(&path) else { return Ok(()) };
    let defined = super::defined_maps()?;
    let want = defined
        .get(names::STATS)
        .ok_or_else(|| Error::Load("this build defines no `stats` map".into()))?;
    if let Some(why) = super::layout_difference(names::STATS, want, &pinned)? {
        tracing::warn!("{why}: counting starts over in a new one");
        std::fs::remove_file(&path).map_err(|e| Error::Kernel {
            what: format!("replacing {}", path.display()),
            source: e,
        })?;
    }
    Ok(())
}

/// Attaches a loaded program to `iface` (see [`attach_shared`]). On a failed first attach,
/// nothing is left behind.
pub fn attach_loaded(
    maps: &Maps,
    mut loaded: Loaded,
    iface: &str,
    mode: XdpMode,
) -> Result<(Counters, bool)> {
    let if_index = if_index(iface)?;
    let dir = pin_dir(iface)?;
    let had_link = dir.join("link").exists();
    let running = had_link && pinned_link_live(iface)?;
    if !running {
        // A link pin without a live link enforces nothing: the leftover of an interface that
        // was deleted (its link went with it), or of a failed attach. Its counters stay: the
        // interface made again counts on from where it was (and `auto` sees no drop to zero).
        for stale in ["link", "prog"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
    }
    let attached = (|| {
        maps.pin_shared(&dir)?;
        let prog = program(&mut loaded.ebpf)?;
        if running {
            let link = PinnedLink::from_pin(dir.join("link"))
                .map_err(|e| kernel("opening the pinned link", e))?;
            let link = XdpLink::try_from(FdLink::from(link))
                .map_err(|e| kernel("the pinned link is not an XDP link", e))?;
            let id = prog.attach_to_link(link).map_err(|e| kernel("replacing the program", e))?;
            // Ours to drop: the link lives on through its pin.
            prog.take_link(id).map_err(|e| kernel("taking the XDP link", e))?;
        } else {
            let id = prog.attach_to_if_index(if_index, mode).map_err(|e| attach_error(iface, e))?;
            let link = prog.take_link(id).map_err(|e| kernel("taking the XDP link", e))?;
            let link =
                FdLink::try_from(link).map_err(|e| kernel("the XDP link is not a bpf_link", e))?;
            link.pin(dir.join("link")).map_err(|e| kernel("pinning the XDP link", e))?;
        }
        let _ = std::fs::remove_file(dir.join("prog"));
        prog.pin(dir.join("prog")).map_err(|e| kernel("pinning the program", e))?;
        let stats = loaded
            .ebpf
            .take_map(names::STATS)
            .ok_or_else(|| Error::Load("the program has no `stats` map".into()))?;
        let stats = PerCpuArray::try_from(stats).map_err(|e| kernel("the stats map", e))?;
        Ok(Counters(stats))
    })();
    match attached {
        Ok(counters) => Ok((counters, running)),
        Err(e) => {
            // A first attach leaves nothing behind; an interface made again keeps its counters.
            if !had_link {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e)
        }
    }
}

/// Loads and attaches the handshake tracepoint (visitor learning) against the shared maps
/// pinned under `iface`, scoped to this process's network namespace (its cookie, and where the
/// kernel's BTF says a socket keeps its namespace). It lives as long as the returned object:
/// learning is the daemon's job, so it stops with the daemon (the filter does not).
pub fn attach_handshakes(iface: &str) -> Result<Ebpf> {
    use aya::programs::TracePoint;
    use edge_common::events::LearnScope;
    let dir = attached_dir(iface)?;
    let (sock_net, net_cookie) = crate::btf::Btf::kernel()
        .and_then(|btf| crate::btf::netns_cookie_offsets(&btf))
        .map_err(|e| Error::Kernel {
            what: "finding where a socket keeps its network namespace".into(),
            source: std::io::Error::other(e),
        })?;
    let netns_cookie = crate::ifaddrs::netns_cookie().map_err(|e| Error::Kernel {
        what: "reading this network namespace's cookie".into(),
        source: e,
    })?;
    let mut loader = EbpfLoader::new();
    for name in SHARED_MAPS.iter().chain([&names::STATS]) {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
    let scope = ebpf
        .map_mut(names::LEARN_SCOPE)
        .ok_or_else(|| Error::Load(format!("the program has no `{}` map", names::LEARN_SCOPE)))?;
    let mut scope: Array<&mut MapData, LearnScope> =
        Array::try_from(scope).map_err(|e| kernel("the learn_scope map", e))?;
    scope
        .set(0, LearnScope { netns_cookie, sock_net, net_cookie }, 0)
        .map_err(|e| kernel("writing the learn_scope map", e))?;
    let prog: &mut TracePoint = ebpf
        .program_mut(names::HANDSHAKE_PROGRAM)
        .ok_or_else(|| Error::Load("the object has no `handshake` program".into()))?
        .try_into()
        .map_err(|e| kernel("the `handshake` program", e))?;
    prog.load().map_err(|e| load_error(&e))?;
    prog.attach("sock", "inet_sock_set_state").map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::NoPrivilege { what: "attaching the handshake tracepoint (CAP_PERFMON)" }
        }
        _ => kernel("attaching to the sock:inet_sock_set_state tracepoint", e),
    })?;
    Ok(ebpf)
}

fn attach_error(iface: &str, e: aya::programs::ProgramError) -> Error {
    match errno(&e) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => Error::InterfaceBusy { iface: iface.into() },
        Some(libc::EPERM) => Error::NoPrivilege { what: "attaching an XDP program" },
        Some(libc::EOPNOTSUPP) => kernel(format!("{iface} does not support this XDP mode"), e),
        _ => kernel(format!("attaching to {iface}"), e),
    }
}
