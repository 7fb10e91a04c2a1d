//! Errors of the control library, in the operator's words.
use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    #[error("no such network interface: {0}")]
    NoInterface(String),
    #[error("{what} needs root, or CAP_BPF and CAP_NET_ADMIN")]
    NoPrivilege { what: &'static str },
    #[error("bpffs is not mounted at {path} and mounting it failed ({source}); run `mount -t bpf bpf {path}`")]
    NoBpffs { path: String, source: io::Error },
    #[error("bpffs is not mounted at {path}, and no other process shares this mount namespace (as under `ip netns exec`, which gives each command its own /sys): a bpffs mounted here would vanish when edge exits, and the filter with it; mount bpffs at {path} on the host and run edge with `nsenter --net=/run/netns/NAME`, which changes only the network namespace")]
    PrivateBpffs { path: String },
    #[error("edge is already attached to {iface} (pins in {pins}); run `edge detach --iface {iface}` first")]
    AlreadyAttached { iface: String, pins: PathBuf },
    #[error("another XDP program is already attached to {iface}; remove it first (`ip link set dev {iface} xdp off`)")]
    InterfaceBusy { iface: String },
    #[error("edge is not attached to {iface} (no pins in {pins})")]
    NotAttached { iface: String, pins: PathBuf },
    #[error("the {map} map is full (capacity {capacity}); {wanted} entries requested")]
    MapFull { map: &'static str, capacity: u32, wanted: usize },
    #[error("the kernel rejected the XDP program: {0}")]
    Load(String),
    #[error("{what}: {source}")]
    Kernel { what: String, source: io::Error },
    #[error("{0}")]
    Pcap(String),
    /// The host cannot be set up as a feature needs (a sysctl the kernel lacks, a saved value
    /// that cannot be read back).
    #[error("{0}")]
    Host(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an error from aya with what we were doing.
pub(crate) fn kernel(what: impl Into<String>, err: impl std::error::Error) -> Error {
    let source = io::Error::other(chain(&err));
    Error::Kernel { what: what.into(), source }
}

/// `err: cause: cause` in one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The OS error code deep inside an aya error, if there is one.
pub(crate) fn errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        current = e.source();
    }
    None
}
