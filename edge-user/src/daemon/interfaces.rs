//! The interfaces the daemon filters: attaching (or adopting the pins an earlier run left),
//! noticing a filter that went away, and their counters.
use aya::programs::XdpMode;
use tracing::{info, warn};

use super::{
    core::{Core, Mirror},
    fault::Fault,
};
use crate::{
    filter::{attach_loaded, load_for, pin_dir, Counters, Loaded, Maps},
    policy::XdpModeSetting,
    stats::Stats,
};

pub struct Interface {
    pub name: String,
    pub link: Link,
    /// A program loaded for this interface, ready to attach the moment it is needed (the
    /// device deleted and made again): attaching it is a few system calls, loading one is a
    /// verification of tens of milliseconds, while the new device may already carry traffic.
    spare: Option<Loaded>,
}

pub enum Link {
    Waiting(String),
    /// `adopted`: the program replaced one an earlier run left running (hitless restart).
    Attached {
        counters: Counters,
        adopted: bool,
    },
}

impl Interface {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), link: Link::Waiting("starting".into()), spare: None }
    }

    /// Not attached, and why; logged when the reason changes.
    fn wait(&mut self, why: &str) {
        let previous = match &self.link {
            Link::Waiting(previous) => previous.as_str(),
            Link::Attached { .. } => "",
        };
        if previous != why {
            warn!(iface = %self.name, "waiting: {why}");
        }
        self.link = Link::Waiting(why.to_string());
    }
}

impl Core {
    pub fn ready(&self) -> bool {
        self.interfaces.iter().all(|i| matches!(i.link, Link::Attached { .. }))
    }

    /// The first attached interface: where the shared maps' pins can be opened.
    pub fn first_attached(&self) -> Option<String> {
        self.interfaces
            .iter()
            .find(|i| matches!(i.link, Link::Attached { .. }))
            .map(|i| i.name.clone())
    }

    /// Attaches, or adopts the pins an earlier run left, on every interface still waiting.
    /// The shared maps are made (or adopted) and filled first: a program never runs with
    /// empty maps. Logs the interfaces whose state changed.
    pub fn bring_up(&mut self) {
        if self.ready() {
            return;
        }
        if self.maps.is_none() {
            if let Err(why) = self.make_maps() {
                for iface in &mut self.interfaces {
                    iface.wait(&why);
                }
                return;
            }
        }
        let mode = match self.xdp_mode {
            XdpModeSetting::Auto => XdpMode::Default,
            XdpModeSetting::Native => XdpMode::Driver,
            XdpModeSetting::Skb => XdpMode::Skb,
        };
        let maps = self.maps.as_ref().expect("made above");
        for iface in &mut self.interfaces {
            if !matches!(iface.link, Link::Waiting(_)) {
                continue;
            }
            // No device yet: wait, keeping the spare program for when it comes.
            if let Err(e) = crate::filter::if_index(&iface.name) {
                iface.wait(&e.to_string());
                continue;
            }
            let loaded = match iface.spare.take() {
                Some(spare) => Ok(spare),
                None => load_for(maps, &iface.name),
            };
            match loaded.and_then(|loaded| attach_loaded(maps, loaded, &iface.name, mode)) {
                Ok((counters, adopted)) => {
                    let what = if adopted {
                        "replaced the running program in its pinned link (no detach)"
                    } else {
                        "attached"
                    };
                    info!(iface = %iface.name, adopted, "{what}");
                    iface.link = Link::Attached { counters, adopted };
                    iface.spare = load_for(maps, &iface.name)
                        .inspect_err(|e| warn!(iface = %iface.name, "no spare program loaded: {e}"))
                        .ok();
                }
                Err(e) => iface.wait(&e.to_string()),
            }
        }
    }

    /// Re-attaches every interface whose filter went away: what the kernel's link
    /// notifications and each tick run.
    pub fn follow_links(&mut self) {
        self.notice_detached();
        self.bring_up();
    }

    /// The maps every interface shares, made to hold the state before any program uses them:
    /// those of the first interface an earlier run left filtering (adopted: filled, never
    /// cleared, so kernel-only state such as knocked admissions and budgets survives a
    /// restart), or new ones.
    fn make_maps(&mut self) -> Result<(), String> {
        let running = self
            .interfaces
            .iter()
            .find_map(|i| pin_dir(&i.name).ok().filter(|dir| dir.join("link").exists()));
        let maps = match running {
            Some(dir) => adopt(&dir).map_err(|e| e.to_string())?,
            None => Maps::create().map_err(|e| e.to_string())?,
        };
        self.maps = Some(maps);
        if let Err(e) = self.mirror(Mirror::Everything) {
            self.maps = None;
            return Err(e.to_string());
        }
        Ok(())
    }

    /// An interface whose filter went away is no longer filtered: it goes back to waiting and
    /// is attached again from the store, as after a reboot. That happens when its link pin
    /// vanished (`edge detach`, or its pins removed: stop the daemon first to take the filter
    /// off), or when the kernel detached its link with the device (deleted or re-created).
    pub fn notice_detached(&mut self) {
        for iface in &mut self.interfaces {
            if !matches!(iface.link, Link::Attached { .. }) {
                continue;
            }
            let pinned = pin_dir(&iface.name).is_ok_and(|dir| dir.join("link").exists());
            if !pinned {
                warn!(
                    iface = %iface.name,
                    "the filter was detached from outside the daemon; re-attaching \
                     (stop the daemon first to take it off)"
                );
                iface.link = Link::Waiting("detached from outside the daemon".into());
            } else if !crate::filter::pinned_link_live(&iface.name).unwrap_or(true) {
                warn!(
                    iface = %iface.name,
                    "the interface was deleted or re-created and its XDP link went with it; \
                     re-attaching"
                );
                iface.link = Link::Waiting("the interface was deleted or re-created".into());
            }
        }
    }

    /// Counters summed over `interface` (or every attached interface).
    pub fn stats(&mut self, interface: &str) -> Result<Stats, Fault> {
        if !interface.is_empty() && !self.interfaces.iter().any(|i| i.name == interface) {
            return Err(Fault::NotFound(format!("the daemon does not run on {interface}")));
        }
        let mut total: Option<Stats> = None;
        for iface in &self.interfaces {
            if !interface.is_empty() && iface.name != interface {
                continue;
            }
            if let Link::Attached { counters, .. } = &iface.link {
                let stats = counters.read().map_err(Fault::from)?;
                total = Some(match total {
                    Some(sum) => sum.plus(&stats),
                    None => stats,
                });
            }
        }
        total.ok_or_else(|| {
            Fault::Unavailable("the filter is not attached to any interface yet".into())
        })
    }
}

/// The shared maps pinned in `dir` by a running filter, for this build: those it lays out
/// alike are taken over as they are; those it lays out otherwise (an upgrade that changed
/// them) are made new and filled from the store with the rest, and each interface's program
/// swapped in its link then uses them. Nothing is detached.
fn adopt(dir: &std::path::Path) -> crate::Result<Maps> {
    let (maps, renewed) = Maps::adopt(dir)?;
    for why in renewed {
        warn!(
            "{}: {why}; made anew and filled from the store (its kernel-only state, such as \
             budgets and knocked admissions, starts over)",
            dir.display()
        );
    }
    Ok(maps)
}
