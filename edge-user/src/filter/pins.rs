//! What a filter leaves in bpffs (`/sys/fs/bpf/edge/IFACE/`: its maps, program and link) and
//! reading it back without a daemon: counters, mode, whether the link still filters a device;
//! and detaching.
use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
};
use edge_common::{
    config::Config,
    keys::{Addr, Bucket, Counter},
    maps as names,
};

use crate::{
    error::{errno, kernel, Error, Result},
    stats::Stats,
};

/// Where `edge attach` pins the program, link and maps: `PIN_ROOT/<iface>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/edge";

/// The ids of the link pinned for `iface` and of the program it runs.
pub fn pinned_link_ids(iface: &str) -> Result<(u32, u32)> {
    let dir = attached_dir(iface)?;
    let link =
        PinnedLink::from_pin(dir.join("link")).map_err(|e| kernel("opening the pinned link", e))?;
    let info = FdLink::from(link).info().map_err(|e| kernel("the pinned link's info", e))?;
    Ok((info.id(), info.program_id()))
}

/// The interface's index in this network namespace, or why there is none.
pub fn if_index(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).map_err(|_| Error::NoInterface(iface.into()))?;
    // SAFETY: NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(Error::NoInterface(iface.into())),
        index => Ok(index),
    }
}

/// `PIN_ROOT/<iface>`, after making sure bpffs is mounted (mounting it if it is not).
pub fn pin_dir(iface: &str) -> Result<PathBuf> {
    if iface.is_empty() || iface.contains('/') || iface.len() > 15 {
        return Err(Error::NoInterface(iface.into()));
    }
    ensure_bpffs(Path::new(PIN_ROOT).parent().unwrap())?;
    Ok(Path::new(PIN_ROOT).join(iface))
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn ensure_bpffs(mount_point: &Path) -> Result<()> {
    let path = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes()).unwrap();
    let is_bpffs = || {
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        unsafe { libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
    };
    if is_bpffs() {
        return Ok(());
    }
    if mount_namespace_is_ours_alone() {
        return Err(Error::PrivateBpffs { path: mount_point.display().to_string() });
    }
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(fstype.as_ptr(), path.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 || !is_bpffs() {
        return Err(Error::NoBpffs {
            path: mount_point.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether no other process shares this process's mount namespace, as under `ip netns exec`
/// (which also mounts a fresh /sys, hiding the host's bpffs). A bpffs mounted there dies with
/// the namespace when edge exits, and every pin in it: the XDP link too, so the filter would
/// be detached the moment `edge attach` reported it attached. Processes whose namespace we
/// cannot read do not count as sharing it.
fn mount_namespace_is_ours_alone() -> bool {
    let Ok(own) = std::fs::read_link("/proc/self/ns/mnt") else { return false };
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    !entries.flatten().any(|entry| {
        let other = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
        other.is_some_and(|pid| pid != me)
            && std::fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|ns| ns == own)
    })
}

pub(super) fn open_pinned_map(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::NoPrivilege { what: "opening the pinned maps" }
        }
        _ => kernel(format!("opening {}", path.display()), e),
    })?;
    Map::from_map_data(data).map_err(|e| kernel(format!("opening {}", path.display()), e))
}

/// The stats of the filter attached to `iface`, from its pins.
pub fn pinned_stats(iface: &str) -> Result<Stats> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::STATS))?;
    let map: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(map).map_err(|e| kernel("the pinned stats map", e))?;
    Stats::read(&map)
}

/// Sources holding a token bucket in the filter on `iface`, from its pins. The kernel makes
/// these (the control plane does not track them), so this walks the map's keys: call it
/// without holding anything others wait for.
pub fn pinned_bucket_count(iface: &str) -> Result<u64> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::UNKNOWN_BUCKETS))?;
    let map: HashMap<MapData, Addr, Bucket> =
        HashMap::try_from(map).map_err(|e| kernel("the pinned unknown_buckets map", e))?;
    Ok(map.keys().filter(|k| k.is_ok()).count() as u64)
}

/// The interfaces edge is attached to, from the pins.
pub fn pinned_interfaces() -> Result<Vec<String>> {
    ensure_bpffs(Path::new(PIN_ROOT).parent().unwrap())?;
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else { return Ok(Vec::new()) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("link").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The mode the filter attached to `iface` runs in, from its pinned config map.
pub fn pinned_mode(iface: &str) -> Result<crate::Mode> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::CONFIG))?;
    let map: Array<MapData, Config> =
        Array::try_from(map).map_err(|e| kernel("the pinned config map", e))?;
    let config = map.get(&0, 0).map_err(|e| kernel("reading the pinned config map", e))?;
    Ok(crate::Mode::from_kernel(config.mode))
}

pub(super) fn attached_dir(iface: &str) -> Result<PathBuf> {
    let dir = pin_dir(iface)?;
    if !dir.join("link").exists() {
        return Err(Error::NotAttached { iface: iface.into(), pins: dir });
    }
    Ok(dir)
}

/// Whether the XDP link pinned for `iface` still filters a device. The kernel detaches a link
/// when its device is deleted (a driver reload, a re-created veth or bond) but the pin stays:
/// such a link enforces nothing, even once a device of the same name is back (a new device).
/// A live link may be on a device in another network namespace (pins are not per namespace),
/// so only the kernel's word counts, not a lookup of the name here.
pub fn pinned_link_live(iface: &str) -> Result<bool> {
    let dir = attached_dir(iface)?;
    let ifindex = xdp_link_ifindex(&dir.join("link"))
        .map_err(|e| Error::Kernel { what: "reading the pinned link".into(), source: e })?;
    Ok(ifindex != 0)
}

/// The interface index of the XDP link pinned at `path`; 0 once the kernel detached it. aya's
/// `LinkInfo` does not expose it, hence two raw bpf(2) calls (uapi `union bpf_attr` and
/// `struct bpf_link_info`, whose per-type union starts at byte 16; `xdp.ifindex` is its first
/// word).
fn xdp_link_ifindex(path: &Path) -> std::io::Result<u32> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    let bpf = |cmd: libc::c_long, attr: &mut [u64; 16]| -> std::io::Result<libc::c_long> {
        // SAFETY: a zero-padded bpf_attr of 128 bytes whose pointers outlive the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr))
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc)
    };
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(bpf(BPF_OBJ_GET, &mut attr)? as i32) };
    let mut info = [0u32; 16];
    let mut attr = [0u64; 16];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | (std::mem::size_of_val(&info) as u64) << 32;
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(std::io::Error::other(format!("link type {} is not XDP", info[0])));
    }
    Ok(info[4])
}

/// Detaches the filter from `iface` and removes its pins (program and maps go with them).
pub fn detach(iface: &str) -> Result<()> {
    let dir = attached_dir(iface)?;
    let link = PinnedLink::from_pin(dir.join("link")).map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => Error::NoPrivilege { what: "detaching" },
        _ => kernel("opening the pinned link", e),
    })?;
    let link = link.unpin().map_err(|e| kernel("unpinning the link", e))?;
    aya::programs::links::Link::detach(link).map_err(|e| kernel("detaching", e))?;
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::Kernel { what: format!("removing {}", dir.display()), source: e })?;
    // The SYN cookie sysctls go back with the last interface of this namespace.
    let others = pinned_interfaces()?.into_iter().filter(|i| if_index(i).is_ok()).count();
    if others == 0 {
        crate::syncookies::Host::current()?.turn_off()?;
    }
    Ok(())
}
