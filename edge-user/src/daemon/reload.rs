//! `edge config reload` and SIGHUP: the config file read again, checked whole, then put in
//! force; a refused file changes nothing.
use std::{collections::HashSet, path::Path};

use edge_common::maps as names;
use tracing::info;

use super::{
    admissions::modified,
    core::{Core, Mirror},
    fault::Fault,
};
use crate::{policy::Policy, store::List, ticket::Keyring, Error};

impl Core {
    /// Re-reads the config file and puts it in force. Everything is checked before anything
    /// changes (the file, what a reload may change, the keys, the lists' capacity with the
    /// API's rules): a refusal leaves the running config, keys and auto phase as they were.
    /// Returns what changed, one line per section.
    pub fn reload(&mut self) -> Result<Vec<String>, Fault> {
        let refused = |why: String| {
            Fault::FailedPrecondition(format!("config not reloaded, the running one stays: {why}"))
        };
        let new = Policy::load(&self.config_path).map_err(|e| refused(e.to_string()))?;
        if let Some(field) = restart_only_change(&self.policy, &new) {
            return Err(refused(format!(
                "{}: {field} changed, and only a restart of the daemon applies it",
                self.config_path.display()
            )));
        }
        let keys = match &new.admission.keys {
            Some(path) if self.policy.admission.keys.as_ref() != Some(path) => {
                Some((Keyring::load(path).map_err(|e| refused(e.to_string()))?, modified(path)))
            }
            Some(_) => self.keys.clone(),
            None => None,
        };
        for (list, config, capacity) in [
            (List::Allow, &new.allow, names::ALLOW_CAPACITY),
            (List::Deny, &new.deny, names::DENY_CAPACITY),
        ] {
            let mut held: HashSet<_> = config.iter().collect();
            held.extend(self.state.rules(list).map(|r| &r.net));
            if held.len() > capacity as usize {
                let full = Error::MapFull { map: list.name(), capacity, wanted: held.len() };
                return Err(refused(format!("{full} (the config file's and the API's rules)")));
            }
        }
        let mut changes = describe_changes(&self.policy, &new);
        if new.mode != self.policy.mode && self.state.mode.is_some() {
            changes.push(format!(
                "note: the mode set with `edge mode` ({}) stays in force over the file's",
                self.mode()
            ));
        }
        // Past validation: the new config is in force; the kernel follows.
        let (mode, was) = (self.mode(), self.kernel_mode());
        self.policy = new;
        self.tokens.set_edge_ring(keys.as_ref().map(|(ring, _)| ring.clone()));
        self.keys = keys;
        self.entering_auto(self.mode(), mode, was);
        self.mirror(Mirror::Everything)?;
        info!(file = %self.config_path.display(), changes = changes.len(), "config reloaded");
        for change in &changes {
            info!("config: {change}");
        }
        Ok(changes)
    }
}

impl Core {
    /// The configuration `edge config show` prints: the config file's, with the mode set
    /// through the API. It parses as a config file and means exactly what the file does: the
    /// API's rules (temporary ones among them) are listed after it as comments, never folded
    /// into `[lists]`, where saving the output would make them permanent.
    pub fn config_toml(&self) -> String {
        let mut shown = self.policy.clone();
        shown.mode = self.mode();
        let mut text = shown.to_toml();
        let rules: Vec<_> = self.state.rules.values().collect();
        if !rules.is_empty() {
            text.push_str(
                "\n# Rules set through the API (`edge allow|deny list`); not part of the file:\n",
            );
            for rule in rules {
                let expires = match rule.expires_at {
                    0 => String::new(),
                    at => format!(" expires {}", crate::text::utc(at)),
                };
                let comment = crate::text::printable(&rule.comment);
                text.push_str(&format!(
                    "#   {} {}{expires} {comment}\n",
                    rule.list.name(),
                    rule.net
                ));
            }
        }
        text
    }
}

/// The first setting that differs and that only a restart can change: the `[daemon]` table
/// (sockets, interfaces, state), learning, the feed and the fleet (their tasks are started
/// once).
fn restart_only_change(old: &Policy, new: &Policy) -> Option<&'static str> {
    let (Some(a), Some(b)) = (&old.daemon, &new.daemon) else {
        return Some("[daemon]");
    };
    if let Some(field) = a.restart_only_change(b) {
        return Some(field);
    }
    if old.learn_handshakes != new.learn_handshakes {
        return Some("learning.handshakes");
    }
    if old.fleet != new.fleet {
        return Some("[fleet]");
    }
    if old.admission.feed != new.admission.feed {
        return Some("the admission feed (redis_url, ...)");
    }
    // The verifiers and the endpoint are built once (their key files are re-read on change).
    let (a, b) = (&old.admission, &new.admission);
    if a.queueit != b.queueit {
        return Some("[admission.queueit]");
    }
    if a.jwt != b.jwt {
        return Some("[admission.jwt]");
    }
    if a.http != b.http {
        return Some("[admission.http]");
    }
    (a.max_sources != b.max_sources).then_some("admission.max_sources")
}

/// One line per setting that a reload changes, in the config file's own terms.
fn describe_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: {a} -> {b}"));
        }
    };
    note("mode", old.mode.to_string(), new.mode.to_string());
    note("auto", old.auto.to_string(), new.auto.to_string());
    let protect =
        |p: &Policy| p.protect.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
    note("scope.protect", protect(old), protect(new));
    note("unknown", old.unknown.to_string(), new.unknown.to_string());
    note("window.days", old.window_days.to_string(), new.window_days.to_string());
    note("window.max_jump_days", old.max_jump_days.to_string(), new.max_jump_days.to_string());
    note("events.drop_sample", old.drop_sample.to_string(), new.drop_sample.to_string());
    note("syn_cookies", old.syn_cookies.to_string(), new.syn_cookies.to_string());
    let list = |l: &[ipnet::IpNet]| format!("{} prefixes", l.len());
    if old.allow != new.allow {
        note("lists.allow", list(&old.allow), format!("{} (changed)", list(&new.allow)));
    }
    if old.deny != new.deny {
        note("lists.deny", list(&old.deny), format!("{} (changed)", list(&new.deny)));
    }
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_deref().map_or("none".to_string(), |p: &Path| p.display().to_string())
    };
    note("admission.keys", path(&old.admission.keys), path(&new.admission.keys));
    let port = |p: Option<u16>| p.map_or("none".to_string(), |p| p.to_string());
    note("admission.knock_port", port(old.admission.knock_port), port(new.admission.knock_port));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_described_in_the_config_files_terms() {
        let parse = |text: &str| Policy::parse(text, "e.toml", Path::new("/etc/edge")).unwrap();
        let old = parse("mode = \"monitor\"\n");
        let new = parse(
            "mode = \"auto\"\n[auto]\nenter_pps = 800\n[admission]\nkeys = \"k\"\n\
             knock_port = 7000\n[unknown]\nrate_pps = 5\n",
        );
        let changes = describe_changes(&old, &new);
        assert!(changes.contains(&"mode: monitor -> auto".to_string()), "{changes:?}");
        assert!(
            changes.contains(&"admission.keys: none -> /etc/edge/k".to_string()),
            "{changes:?}"
        );
        assert!(changes.contains(&"admission.knock_port: none -> 7000".to_string()), "{changes:?}");
        for change in &changes {
            assert!(
                !change.contains("Some(") && !change.contains("None") && !change.contains('{'),
                "{change}"
            );
        }
    }
}
