//! Allow and deny rules set through the API, beside the config file's lists.
//!
//! The kernel runs the union of both. A prefix may be on the config file's list and an API
//! rule at once (the config file gained it after the rule was added): the API rule still
//! expires or is removed on its own, and the prefix stays in the kernel for the config file.
use ipnet::IpNet;
use tracing::info;

use super::{
    core::{Core, Origin},
    fault::Fault,
};
use crate::store::{List, Op, StoredRule};

/// A rule as listed: from the config file or from the API.
pub struct ListedRule {
    pub rule: StoredRule,
    pub from_config: bool,
}

impl Core {
    /// Adds or updates rules (all or nothing). Returns (added, updated).
    pub fn add_rules(&mut self, rules: Vec<StoredRule>) -> Result<(u64, u64), Fault> {
        let added =
            rules.iter().filter(|r| !self.state.rules.contains_key(&(r.list, r.net))).count();
        let total = rules.len();
        self.change(Op::PutRules(rules), Origin::Api)?;
        Ok((added as u64, (total - added) as u64))
    }

    /// Removes rules set through the API (all or nothing).
    pub fn remove_rules(&mut self, list: List, nets: &[IpNet]) -> Result<u64, Fault> {
        let mut nets = nets.to_vec();
        nets.sort();
        nets.dedup();
        let n = nets.len() as u64;
        self.change(Op::RemoveRules { list, nets }, Origin::Api)?;
        Ok(n)
    }

    pub fn list_rules(&self, list: List) -> Vec<ListedRule> {
        let from_config = self.config_list(list).iter().map(|net| ListedRule {
            rule: StoredRule {
                list,
                net: *net,
                comment: String::new(),
                expires_at: 0,
                added_at: 0,
            },
            from_config: true,
        });
        let from_api =
            self.state.rules(list).map(|r| ListedRule { rule: r.clone(), from_config: false });
        from_config.chain(from_api).collect()
    }

    /// Removes the API rules whose time is up, each list in one change. An expiry is its own
    /// operation: nothing else on a list (a config entry for the same prefix) can hold it up.
    pub(super) fn expire_rules(&mut self) -> Result<u64, Fault> {
        let now = self.now();
        let mut expired = 0;
        for list in [List::Allow, List::Deny] {
            let nets: Vec<IpNet> = self
                .state
                .rules(list)
                .filter(|r| r.expires_at != 0 && r.expires_at <= now)
                .map(|r| r.net)
                .collect();
            if nets.is_empty() {
                continue;
            }
            let n = nets.len() as u64;
            self.change(Op::RemoveRules { list, nets }, Origin::Daemon)?;
            info!(list = list.name(), expired = n, "rules expired");
            expired += n;
        }
        Ok(expired)
    }
}
