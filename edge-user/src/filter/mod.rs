//! The filter: the XDP program built into this binary, loaded into the kernel with its maps.
//! Rooms: `maps` (typed access to every map and the verbs that fill them), `record` (the
//! config record the program reads per packet), `attach` (loading for an interface and
//! attaching, hitlessly), `pins` (what `/sys/fs/bpf/edge/IFACE/` holds and reading it back).
mod attach;
mod maps;
mod pins;
mod record;

use std::{path::PathBuf, time::Duration};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use edge_common::{
    maps::{self as names, Holding},
    reason::Reason,
};

pub use attach::{attach_handshakes, attach_loaded, attach_shared, load_for, Loaded};
#[cfg(test)]
pub(crate) use maps::lpm_key;
pub use maps::{Counters, Maps};
pub use pins::{
    detach, if_index, pin_dir, pinned_bucket_count, pinned_interfaces, pinned_link_ids,
    pinned_link_live, pinned_mode, pinned_stats, PIN_ROOT,
};
pub use record::kernel_config;

use crate::error::{chain, errno, kernel, Error, Result};

/// The XDP program, built from `edge-ebpf` by build.rs.
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge"));

/// The maps every interface of one daemon shares (from `edge_common::maps::INVENTORY`).
pub const SHARED_MAPS: [&str; 19] = held(Holding::Shared);

/// Every map the program has that is pinned (these are also the pin file names): the shared
/// ones and the per-interface counters.
pub const MAP_NAMES: [&str; SHARED_MAPS.len() + 1] = {
    let mut all = [names::STATS; SHARED_MAPS.len() + 1];
    let mut i = 0;
    while i < SHARED_MAPS.len() {
        all[i] = SHARED_MAPS[i];
        i += 1;
    }
    all
};

/// The inventory's maps held as `holding`, in its order; `N` must be their number (checked
/// when the constant is built).
const fn held<const N: usize>(holding: Holding) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < names::INVENTORY.len() {
        let (name, how) = names::INVENTORY[i];
        if how as u8 == holding as u8 {
            assert!(n < N, "more maps of this holding in the inventory than N");
            out[n] = name;
            n += 1;
        }
        i += 1;
    }
    assert!(n == N, "fewer maps of this holding in the inventory than N");
    out
}

/// What the program did with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// XDP action: 1 drop, 2 pass, 3 sent back (a SYN cookie), 0 aborted.
    pub action: u32,
    pub reason: Reason,
    /// Counted as a monitor-mode would-drop.
    pub would_drop: bool,
}

impl Judgement {
    pub fn verdict(&self) -> &'static str {
        match self.action {
            XDP_PASS => "pass",
            XDP_DROP => "drop",
            XDP_TX => "reply",
            _ => "aborted",
        }
    }

    pub fn reason_name(&self) -> &'static str {
        edge_common::reason::REASON_NAMES[self.reason as usize]
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// Sent back out of the interface it came in on: the program's SYN-ACK with a cookie.
pub const XDP_TX: u32 = 3;

/// The XDP program loaded into the kernel, not attached.
pub struct Filter {
    ebpf: Ebpf,
    pub maps: Maps,
}

impl Filter {
    /// Loads the embedded program. The kernel verifies it here.
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
        program(&mut ebpf)?.load().map_err(|e| load_error(&e))?;
        let maps = Maps::from_ebpf(&mut ebpf)?;
        Ok(Self { ebpf, maps })
    }

    /// Runs one frame through the program (BPF_PROG_TEST_RUN) and reports the verdict and the
    /// reason it was counted under.
    pub fn judge(&mut self, frame: &[u8]) -> Result<Judgement> {
        let before = self.maps.stats()?;
        let action = self.run(frame, 1)?.0;
        let delta = self.maps.stats()?.since(&before);
        let (reason, would_drop) = delta
            .only_reason()
            .ok_or_else(|| Error::Load("test run counted no single reason".into()))?;
        Ok(Judgement { action, reason, would_drop })
    }

    /// Runs a frame `repeat` times in the kernel; returns the action and the mean time per run.
    pub fn run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let (action, duration, _) = self.run_frame(frame, repeat, None)?;
        Ok((action, duration))
    }

    /// Runs the program once on `frame` and returns its action with the frame as the program
    /// left it (a reply it sent back with XDP_TX, say).
    pub fn run_and_read(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        // Room for the frame to grow (XDP headroom and tailroom are a page at most).
        let mut out = vec![0u8; frame.len() + 4096];
        let (action, _, len) = self.run_frame(frame, 1, Some(&mut out))?;
        out.truncate(len);
        Ok((action, out))
    }

    fn run_frame(
        &mut self,
        frame: &[u8],
        repeat: u32,
        out: Option<&mut [u8]>,
    ) -> Result<(u32, Duration, usize)> {
        let prog = program(&mut self.ebpf)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = out;
        opts.repeat = repeat;
        let result = prog.test_run(opts).map_err(|e| {
            if errno(&e) == Some(libc::EINVAL) && frame.len() < 14 {
                Error::Kernel {
                    what: format!("test run of a {}-byte frame", frame.len()),
                    source: std::io::Error::other(
                        "the kernel refuses frames shorter than an Ethernet header",
                    ),
                }
            } else {
                kernel("BPF_PROG_TEST_RUN", e)
            }
        })?;
        Ok((result.return_value, result.duration, result.data_size_out as usize))
    }

    /// The loaded program's descriptor, for callers that run it from several threads at once
    /// (the bench's many-core cases); valid while the filter lives.
    pub fn program_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        Ok(program(&mut self.ebpf)?
            .fd()
            .map_err(|e| kernel("the program's descriptor", e))?
            .as_fd())
    }

    /// Pins program and maps under `PIN_ROOT/<iface>/`, attaches, and pins the link, so the
    /// filter stays after this process exits. On any failure, nothing is left behind.
    /// Returns the pin directory and the maps, which stay usable.
    pub fn attach(self, iface: &str, mode: XdpMode) -> Result<(PathBuf, Maps)> {
        let dir = pin_dir(iface)?;
        // Pins whose link is defunct (the interface was deleted) enforce nothing: replaced.
        if dir.join("link").exists() && pinned_link_live(iface)? {
            return Err(Error::AlreadyAttached { iface: iface.into(), pins: dir });
        }
        // The daemon's path with these maps as the set: one way to pin and attach.
        attach_shared(&self.maps, iface, mode)?;
        Ok((dir, self.maps))
    }
}

/// The maps this build's program defines (name → definition), from the embedded object.
pub fn defined_maps() -> Result<std::collections::HashMap<String, aya_obj::Map>> {
    let object = aya_obj::Object::parse(PROGRAM_OBJECT)
        .map_err(|e| Error::Load(format!("parsing the embedded program: {e}")))?;
    Ok(object.maps)
}

/// How `maps` (pinned by an earlier build) differ from `defined`, if they do: a new binary
/// reuses pinned maps, so a changed key, value or size must not be misread.
pub fn layout_mismatch(
    defined: &std::collections::HashMap<String, aya_obj::Map>,
    maps: &Maps,
) -> Result<Option<String>> {
    for name in SHARED_MAPS {
        let Some(want) = defined.get(name) else {
            return Ok(Some(format!("this build has no `{name}` map")));
        };
        if let Some(why) = layout_difference(name, want, maps.data(name)?)? {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// How the map `have` differs from this build's definition `want` of `name`, if it does.
pub(crate) fn layout_difference(
    name: &str,
    want: &aya_obj::Map,
    have: &aya::maps::MapData,
) -> Result<Option<String>> {
    let have = have.info().map_err(|e| kernel(format!("the {name} map"), e))?;
    let have_type = have.map_type().map_err(|e| kernel(format!("the {name} map's type"), e))?;
    if have_type as u32 != want.map_type() {
        return Ok(Some(format!(
            "the pinned `{name}` map is of type {have_type:?}, this build's of type {}",
            want.map_type()
        )));
    }
    let want = (want.key_size(), want.value_size(), want.max_entries(), want.map_flags());
    let have = (have.key_size(), have.value_size(), have.max_entries(), have.map_flags());
    Ok((want != have).then(|| {
        format!(
            "the pinned `{name}` map has (key, value, entries, flags) {have:?}, this build {want:?}"
        )
    }))
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(names::PROGRAM)
        .ok_or_else(|| Error::Load("the object has no `edge` program".into()))?
        .try_into()
        .map_err(|e| kernel("the `edge` program", e))
}

fn load_error(e: &(dyn std::error::Error + 'static)) -> Error {
    // EACCES is the verifier refusing the program; only EPERM is about privileges.
    match errno(e) {
        Some(libc::EPERM) => Error::NoPrivilege { what: "loading the XDP program" },
        _ => Error::Load(chain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_is_the_maps_the_build_defines() {
        let mut defined: Vec<String> = defined_maps().unwrap().into_keys().collect();
        let mut listed: Vec<String> = names::INVENTORY.iter().map(|(n, _)| n.to_string()).collect();
        defined.retain(|name| !name.starts_with('.')); // sections (.bss, .rodata), not maps
        defined.sort();
        listed.sort();
        assert_eq!(
            defined, listed,
            "edge-ebpf/src/maps.rs and edge_common::maps::INVENTORY differ"
        );
        assert!(MAP_NAMES.contains(&names::STATS) && !MAP_NAMES.contains(&names::LEARN_SCOPE));
    }
}
