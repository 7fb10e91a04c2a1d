//! What the host needs while the program answers SYNs with cookies (docs/syn-cookies.md), and
//! putting the host back as it was.
//!
//! Two sysctls of the network namespace, set while the program answers SYNs:
//! - `net.ipv4.tcp_syncookies = 2`: the kernel makes a cookie for the program's helper (and
//!   marks the listener as sending cookies, so it accepts the cookie ACKs) only in this mode.
//!   The kernel itself then answers what the program leaves to it (SYNs with IP options) with
//!   cookies too.
//! - `net.ipv4.tcp_timestamps = 2` where it was 1: timestamps without the per-address random
//!   offset, which the kernel subtracts before it reads the client's options out of the
//!   timestamp the program sent. 0 (timestamps off) stays 0: cookie connections then lose
//!   window scaling and SACK, as the kernel's own cookies do.
//!
//! The values found before are saved (fsynced) before the first change, in `/run/edge`, one
//! file per network namespace: a daemon killed with -9 finds them at its next start, `edge
//! detach` finds them without a daemon, and a reboot, which puts the sysctls back itself,
//! forgets them with `/run`.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use edge_common::config::{SYN_OPT_SACK, SYN_OPT_TIMESTAMPS, SYN_OPT_WSCALE, SYN_OPT_WSCALE_SHIFT};

use crate::{Error, Result};

const SYSCTL_ROOT: &str = "/proc/sys";
const SYNCOOKIES: &str = "net/ipv4/tcp_syncookies";
const TIMESTAMPS: &str = "net/ipv4/tcp_timestamps";
/// Where the values found before are kept while the mode is on.
pub const SAVED_DIR: &str = "/run/edge";

/// The value each sysctl needs while the mode is on, given the value found.
fn needed(name: &str, found: &str) -> Option<&'static str> {
    match (name, found) {
        (SYNCOOKIES, "2") => None,
        (SYNCOOKIES, _) => Some("2"),
        (TIMESTAMPS, "1") => Some("2"),
        _ => None,
    }
}

/// The host's sysctls for SYN cookies, in one network namespace.
pub struct Host {
    root: PathBuf,
    saved: PathBuf,
}

impl Host {
    /// The namespace this process runs in. Its file is named by the namespace's cookie, which,
    /// unlike its inode number, is never given to another namespace while the host runs: a
    /// file left by a namespace since deleted is never taken for this one's.
    pub fn current() -> Result<Self> {
        let netns_cookie = || crate::ifaddrs::netns_cookie().map_err(|e| io("SO_NETNS_COOKIE", e));
        Ok(Self {
            root: PathBuf::from(SYSCTL_ROOT),
            saved: Path::new(SAVED_DIR).join(format!("syn-cookies-netns-{}.conf", netns_cookie()?)),
        })
    }

    /// Whether the host is set up for the program's cookies (values saved to put back).
    pub fn is_on(&self) -> bool {
        self.saved.exists()
    }

    /// Whether the kernel has what the mode needs.
    pub fn check(&self) -> Result<()> {
        let syncookies = self.root.join(SYNCOOKIES);
        if !syncookies.exists() {
            return Err(Error::Host(format!(
                "syn_cookies: this kernel has no SYN cookies ({} is missing: \
                 CONFIG_SYN_COOKIES is off)",
                syncookies.display()
            )));
        }
        Ok(())
    }

    /// Sets the sysctls the mode needs, saving what was there first. Refused, changing
    /// nothing, where the kernel has no SYN cookies.
    pub fn turn_on(&self) -> Result<()> {
        self.check()?;
        if !self.is_on() {
            let mut text = String::new();
            for name in [SYNCOOKIES, TIMESTAMPS] {
                text.push_str(&format!("{} = {}\n", name.replace('/', "."), self.read(name)?));
            }
            write_durably(&self.saved, &text)?;
        }
        for name in [SYNCOOKIES, TIMESTAMPS] {
            if let Some(value) = needed(name, &self.read(name)?) {
                self.write(name, value)?;
            }
        }
        Ok(())
    }

    /// Puts back the values saved when the mode turned on; nothing if it is not on.
    pub fn turn_off(&self) -> Result<()> {
        let text = match std::fs::read_to_string(&self.saved) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&self.saved.display().to_string(), e)),
        };
        for (n, line) in text.lines().enumerate() {
            let (name, value) = line.split_once(" = ").ok_or_else(|| {
                Error::Host(format!("{}:{}: not `name = value`", self.saved.display(), n + 1))
            })?;
            let name = name.replace('.', "/");
            if ![SYNCOOKIES, TIMESTAMPS].contains(&name.as_str()) || value.parse::<u8>().is_err() {
                return Err(Error::Host(format!(
                    "{}:{}: `{line}` is not a saved SYN cookie sysctl",
                    self.saved.display(),
                    n + 1
                )));
            }
            self.write(&name, value)?;
        }
        std::fs::remove_file(&self.saved).map_err(|e| io(&self.saved.display().to_string(), e))
    }

    fn read(&self, name: &str) -> Result<String> {
        let path = self.root.join(name);
        Ok(std::fs::read_to_string(&path)
            .map_err(|e| io(&path.display().to_string(), e))?
            .trim()
            .into())
    }

    fn write(&self, name: &str, value: &str) -> Result<()> {
        let path = self.root.join(name);
        std::fs::write(&path, value).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::NoPrivilege { what: "setting sysctls" },
            _ => io(&path.display().to_string(), e),
        })
    }
}

/// The `SYN_OPT_*` bits for this namespace's TCP sysctls, with the window scale its listeners
/// choose: `tcp_select_initial_window` scales the largest receive space, the larger of
/// `tcp_rmem`'s maximum and `net.core.rmem_max`, down to 16 bits.
pub fn host_options() -> u32 {
    let read = |name: &str| std::fs::read_to_string(Path::new(SYSCTL_ROOT).join(name)).ok();
    let on = |name: &str| read(name).is_some_and(|v| v.trim() != "0");
    let mut options = 0;
    if on(TIMESTAMPS) {
        options |= SYN_OPT_TIMESTAMPS;
    }
    if on("net/ipv4/tcp_sack") {
        options |= SYN_OPT_SACK;
    }
    if on("net/ipv4/tcp_window_scaling") {
        options |= SYN_OPT_WSCALE;
    }
    let rmem = read("net/ipv4/tcp_rmem")
        .and_then(|v| v.split_whitespace().nth(2).and_then(|m| m.parse::<u64>().ok()))
        .unwrap_or(6 << 20);
    let rmem_max =
        read("net/core/rmem_max").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    options | window_scale(rmem.max(rmem_max)) << SYN_OPT_WSCALE_SHIFT
}

/// The window scale a listener chooses for a receive space of `space` bytes.
fn window_scale(space: u64) -> u32 {
    (space.max(1).ilog2().saturating_sub(15)).min(14)
}

fn write_durably(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp.display().to_string(), e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(&path.display().to_string(), e))
}

fn io(what: &str, source: std::io::Error) -> Error {
    Error::Kernel { what: what.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_scale_follows_the_largest_receive_space() {
        assert_eq!(window_scale(6 << 20), 7, "Linux's default tcp_rmem maximum");
        assert_eq!(window_scale(32 << 20), 10);
        assert_eq!(window_scale(65_535), 0);
        assert_eq!(window_scale(1 << 40), 14);
    }

    #[test]
    fn only_what_cookies_need_changes() {
        assert_eq!(needed(SYNCOOKIES, "1"), Some("2"));
        assert_eq!(needed(SYNCOOKIES, "0"), Some("2"));
        assert_eq!(needed(SYNCOOKIES, "2"), None);
        assert_eq!(needed(TIMESTAMPS, "1"), Some("2"));
        assert_eq!(needed(TIMESTAMPS, "0"), None, "timestamps off stay off");
        assert_eq!(needed(TIMESTAMPS, "2"), None);
    }
}
