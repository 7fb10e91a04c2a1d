//! How the fleet is doing, as this node sees it: whether Redis answers (degraded past
//! `degraded_after_s`), what this node reports to the others, and `edge fleet status`.
use tracing::{info, warn};

use super::{core::Core, fault::Fault, fleet::NodeReport};
use crate::{api, fleet::stream_id, policy::List};

impl Core {
    /// Whether the fleet is serving this node: Redis has answered and is not out.
    pub fn fleet_ok(&self) -> Option<bool> {
        self.fleet.as_ref().map(|link| link.contacted && !link.degraded)
    }

    /// Redis answered (`Ok`) or failed. Past `degraded_after_s` the fleet is degraded: said
    /// once in the log, in status, health and metrics; enforcement goes on from the store.
    pub fn fleet_report(&mut self, result: Result<(), String>) {
        let now = self.now();
        let Some(link) = self.fleet.as_mut() else { return };
        match result {
            Ok(()) => {
                link.ok_at = now;
                link.contacted = true;
                link.error.clear();
                if link.degraded {
                    link.degraded = false;
                    info!("fleet: Redis is back; publishing what was learned meanwhile");
                }
            }
            Err(error) => {
                link.error = error;
                let down = now.saturating_sub(link.ok_at);
                if !link.degraded && down >= u64::from(link.settings.degraded_after_s) {
                    link.degraded = true;
                    warn!(
                        redis = %link.settings.redis_url_redacted(),
                        "fleet: degraded: {} (for {down} s); enforcing and learning locally",
                        link.error
                    );
                }
            }
        }
    }

    /// `fleet` in status: off, connecting (no answer from Redis since start, not degraded
    /// yet), ok, or degraded and why.
    pub fn fleet_state(&self) -> String {
        match &self.fleet {
            None => "off".into(),
            Some(link) if !link.degraded && !link.contacted => "connecting".into(),
            Some(link) if !link.degraded => "ok".into(),
            Some(link) => format!(
                "degraded: {} unreachable since unix {} ({}); enforcing and learning locally",
                link.settings.redis_url_redacted(),
                link.ok_at,
                link.error
            ),
        }
    }

    /// What this node reports to the others.
    pub fn fleet_node_report(&self) -> NodeReport {
        let count = |list| self.state.rules(list).count() as u64;
        NodeReport {
            node: self.fleet.as_ref().map_or(String::new(), |l| l.settings.node.clone()),
            at: self.now(),
            incarnation: self.state.fleet.cursor.incarnation.clone().unwrap_or_default(),
            position: self.state.fleet.cursor.position.clone().unwrap_or_default(),
            visitors: self.state.history.len(),
            allow_rules: count(List::Allow),
            deny_rules: count(List::Deny),
            degraded: self.fleet.as_ref().is_some_and(|l| l.degraded),
        }
    }

    /// `edge fleet status`: this node's view of the fleet.
    pub fn fleet_status(&self) -> Result<api::GetFleetStatusResponse, Fault> {
        let link = self.fleet.as_ref().ok_or_else(|| {
            Fault::FailedPrecondition(format!(
                "this node is in no fleet: {} has no [fleet] table",
                self.config_path.display()
            ))
        })?;
        let newest = link.nodes.iter().filter_map(|n| stream_id(&n.position)).max();
        let nodes = link
            .nodes
            .iter()
            .map(|n| api::FleetNode {
                node: n.node.clone(),
                last_contact: n.at,
                position: n.position.clone(),
                lag_ms: match (newest, stream_id(&n.position)) {
                    (Some(newest), Some(at)) => newest.0.saturating_sub(at.0),
                    (Some(newest), None) => newest.0,
                    _ => 0,
                },
                visitors: n.visitors,
                allow_rules: n.allow_rules,
                deny_rules: n.deny_rules,
                degraded: n.degraded,
            })
            .collect();
        let (covers, made_at, bytes) = link.snapshot.clone().unwrap_or_default();
        Ok(api::GetFleetStatusResponse {
            node: link.settings.node.clone(),
            stream: link.settings.stream.clone(),
            redis: link.settings.redis_url_redacted(),
            degraded: link.degraded,
            error: link.error.clone(),
            last_contact: link.ok_at,
            nodes,
            snapshot_covers: covers,
            snapshot_age_s: if made_at == 0 { 0 } else { self.now().saturating_sub(made_at) },
            snapshot_bytes: bytes,
            published: link.published,
            applied: link.applied,
            refused: link
                .refused
                .iter()
                .map(|(reason, count)| api::RejectionCount {
                    reason: (*reason).into(),
                    count: *count,
                })
                .collect(),
            unpublished: self.fleet_unpublished(),
        })
    }

    pub fn fleet_position(&self) -> Option<String> {
        self.state.fleet.cursor.position.clone()
    }

    pub fn fleet_unpublished(&self) -> u64 {
        self.state.fleet.made.saturating_sub(self.state.fleet.cursor.published)
    }
}
