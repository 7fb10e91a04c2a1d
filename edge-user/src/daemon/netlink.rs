//! The kernel's link notifications (rtnetlink, RTMGRP_LINK): an interface the daemon filters
//! that is deleted or created again (a driver reload, a re-created veth or bond) loses its
//! XDP link with the old device, and the daemon hears of it the moment it happens instead of
//! on its next poll, so the new device is filtered before it carries traffic.
//!
//! A raw NETLINK_ROUTE socket: what is read is the fixed `nlmsghdr` and `ifinfomsg` headers and
//! one attribute (IFLA_IFNAME), which does not justify a netlink crate.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use tokio::sync::mpsc;
use tracing::{debug, warn};

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Starts a thread that sends the name of every watched interface the kernel reports created,
/// deleted or changed. Ends when the receiver is dropped.
pub fn watch(interfaces: Vec<String>) -> std::io::Result<mpsc::Receiver<String>> {
    // SAFETY: plain syscalls; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as u16;
    address.nl_groups = RTMGRP_LINK;
    // SAFETY: a valid sockaddr_nl of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new().name("edge-netlink".into()).spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into our buffer.
            let n = unsafe {
                libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // ENOBUFS: notifications were lost; the periodic check catches up.
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::ENOBUFS)
                {
                    warn!("link notifications stopped: {e}; interfaces are checked every second");
                    return;
                }
                continue;
            }
            for name in link_names(&buffer[..n as usize]) {
                if interfaces.contains(&name) {
                    debug!(iface = %name, "link notification");
                    if tx.blocking_send(name).is_err() {
                        return;
                    }
                }
            }
        }
    })?;
    Ok(rx)
}

/// The interface names of the RTM_NEWLINK and RTM_DELLINK messages in one datagram.
fn link_names(mut data: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        if matches!(kind, RTM_NEWLINK | RTM_DELLINK) {
            if let Some(name) = ifname(&data[NLMSG_HDRLEN..len]) {
                names.push(name);
            }
        }
        data = &data[align(len).min(data.len())..];
    }
    names
}

/// IFLA_IFNAME among a link message's attributes.
fn ifname(message: &[u8]) -> Option<String> {
    let mut attrs = message.get(IFINFOMSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == IFLA_IFNAME {
            let value = &attrs[4..len];
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let value = [name.as_bytes(), &[0]].concat();
        attr.extend(((4 + value.len()) as u16).to_ne_bytes());
        attr.extend(IFLA_IFNAME.to_ne_bytes());
        attr.extend(&value);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // An attribute before the name, as the kernel sends (IFLA_MTU).
        let mtu = [8u16.to_ne_bytes(), 4u16.to_ne_bytes()].concat();
        let body = [vec![0u8; IFINFOMSG_LEN], mtu, 1500u32.to_ne_bytes().to_vec(), attr].concat();
        let len = NLMSG_HDRLEN + body.len();
        let mut out = (len as u32).to_ne_bytes().to_vec();
        out.extend(kind.to_ne_bytes());
        out.extend([0u8; 10]);
        out.extend(body);
        out
    }

    #[test]
    fn link_messages_name_their_interface() {
        let datagram =
            [message(RTM_NEWLINK, "eth1"), message(20, "addr"), message(RTM_DELLINK, "veth7")]
                .concat();
        assert_eq!(link_names(&datagram), ["eth1", "veth7"]);
        assert!(link_names(&datagram[..10]).is_empty());
    }
}
