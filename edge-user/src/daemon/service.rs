//! The gRPC services: parse and bound each request, call the core, translate the answer.
use std::{pin::Pin, time::Duration};

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::{
    core::Origin,
    fault::Fault,
    handle::{Handle, MAX_EXPORTS, MAX_IMPORTS},
    interfaces::Link,
    tokens::{Batch, TokenCounts},
};
use crate::{
    api::{
        self, admissions_server::Admissions, control_server::Control, rules_server::Rules,
        visitors_server::Visitors,
    },
    history::HistoryBuilder,
    import::{visitor_key, Format, Importer},
    policy::{parse_cidr, Mode},
    store::{List, StoredRule},
    token::Kind,
    visitors::{display_key, Day, VisitorKey},
};

/// Largest batch of a unary call.
pub const MAX_BATCH: usize = 100_000;
/// Longest gap between two messages of an import stream.
const IMPORT_IDLE: Duration = Duration::from_secs(30);
const MAX_PAGE: u32 = 10_000;
const DEFAULT_PAGE: u32 = 1_000;
/// Longest comment on a rule, and the furthest expiry a rule may be given (ten years).
const MAX_COMMENT: usize = 256;
pub const MAX_EXPIRY_S: u64 = 3650 * 86_400;

fn invalid(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

fn parse_mode(field: &str, s: &str) -> Result<Mode, Status> {
    Mode::parse(s)
        .ok_or_else(|| invalid(field, format!("`{s}` is not off, monitor, enforce or auto")))
}

fn parse_list(field: &str, s: &str) -> Result<List, Status> {
    List::parse(s).ok_or_else(|| invalid(field, format!("`{s}` is not allow or deny")))
}

fn check_batch(field: &str, len: usize) -> Result<(), Status> {
    if len > MAX_BATCH {
        return Err(invalid(field, format!("{len} entries; at most {MAX_BATCH} per call")));
    }
    Ok(())
}

#[tonic::async_trait]
impl Control for Handle {
    async fn get_status(
        &self,
        _: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        let counts = self.tokens.counts();
        let status = self
            .with(move |core| {
                let interfaces = core
                    .interfaces
                    .iter()
                    .map(|i| api::InterfaceStatus {
                        name: i.name.clone(),
                        state: match &i.link {
                            Link::Attached { .. } => "attached".into(),
                            Link::Waiting(why) => format!("waiting: {why}"),
                        },
                        adopted: matches!(i.link, Link::Attached { adopted: true, .. }),
                        pins: crate::filter::PIN_ROOT.to_string() + "/" + &i.name,
                    })
                    .collect();
                let rules = |list| core.list_rules(list).len() as u64;
                Ok(api::GetStatusResponse {
                    version: env!("CARGO_PKG_VERSION").into(),
                    ready: core.ready(),
                    mode: core.mode().to_string(),
                    interfaces,
                    today: core.today().to_string(),
                    window_days: u32::from(core.policy.window_days),
                    visitors_v4: core.history().v4.len(),
                    visitors_v6: core.history().v6.len(),
                    allow_rules: rules(List::Allow),
                    deny_rules: rules(List::Deny),
                    state_dir: core.state_dir().display().to_string(),
                    wal_bytes: core.wal_bytes(),
                    rolled_to: core.rolled_to().to_string(),
                    admissions: core.admissions(),
                    feed: core.feed_state(),
                    feed_position: core.feed_position().unwrap_or_default(),
                    fleet: core.fleet_state(),
                    auto: (core.mode() == Mode::Auto).then(|| {
                        let (w, cfg) = (&core.auto, &core.policy.auto);
                        api::AutoStatus {
                            phase: w.phase.name().into(),
                            since: w.since,
                            switches_to_enforce: w.to_enforce,
                            switches_to_monitor: w.to_monitor,
                            enter_pps: cfg.enter_pps,
                            exit_pps: cfg.exit_pps,
                            sustain_s: cfg.sustain_s,
                            cool_down_s: cfg.cool_down_s,
                        }
                    }),
                    unknown_pps: core.auto.unknown_pps,
                    kernel_mode: core.kernel_mode().to_string(),
                    learned_visitors: core.learned,
                    admission_rejections: counts
                        .refused_of(Kind::Edge)
                        .map(|(reason, count)| api::RejectionCount { reason: reason.into(), count })
                        .collect(),
                    tickets_verified: counts.verified.get(&Kind::Edge).copied().unwrap_or(0),
                    tokens: token_status(&counts),
                    jwks: core.jwks_status(),
                    admission_endpoint: core.endpoint_status(),
                    failing_jobs: core
                        .jobs
                        .failing()
                        .map(|(name, job)| api::JobStatus {
                            name: name.into(),
                            failing_since: job.failing_since.unwrap_or_default(),
                            failures: job.failures,
                            error: job.last_error.clone(),
                        })
                        .collect(),
                    window_hold: core.hold_message().unwrap_or_default(),
                })
            })
            .await?;
        Ok(Response::new(status))
    }

    async fn set_mode(
        &self,
        request: Request<api::SetModeRequest>,
    ) -> Result<Response<api::SetModeResponse>, Status> {
        let mode = parse_mode("mode", &request.into_inner().mode)?;
        let previous = self.with(move |core| core.set_mode(mode)).await?;
        Ok(Response::new(api::SetModeResponse {
            previous: previous.to_string(),
            mode: mode.to_string(),
        }))
    }

    async fn get_config(
        &self,
        _: Request<api::GetConfigRequest>,
    ) -> Result<Response<api::GetConfigResponse>, Status> {
        let answer = self
            .with(|core| {
                Ok(api::GetConfigResponse {
                    path: core.config_path.display().to_string(),
                    toml: core.config_toml(),
                    mode_source: if core.state().mode.is_some() { "api" } else { "config" }.into(),
                })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn roll_window(
        &self,
        _: Request<api::RollWindowRequest>,
    ) -> Result<Response<api::RollWindowResponse>, Status> {
        let rolled = self.with(|core| core.roll_window(true)).await?;
        let answer = match rolled {
            Some(r) => api::RollWindowResponse {
                from: r.from.map(|d| d.to_string()).unwrap_or_default(),
                to: r.to.to_string(),
                left: r.left,
                rolled: true,
            },
            None => api::RollWindowResponse { rolled: false, ..Default::default() },
        };
        Ok(Response::new(answer))
    }

    async fn get_fleet_status(
        &self,
        _: Request<api::GetFleetStatusRequest>,
    ) -> Result<Response<api::GetFleetStatusResponse>, Status> {
        self.with(|core| core.fleet_status()).await.map(Response::new)
    }

    async fn reload_config(
        &self,
        _: Request<api::ReloadConfigRequest>,
    ) -> Result<Response<api::ReloadConfigResponse>, Status> {
        let answer = self
            .with(|core| {
                let changes = core.reload()?;
                Ok(api::ReloadConfigResponse {
                    path: core.config_path.display().to_string(),
                    changes,
                })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_top(
        &self,
        request: Request<api::GetTopRequest>,
    ) -> Result<Response<api::GetTopResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 10,
            n @ 1..=1000 => n as usize,
            n => return Err(invalid("limit", format!("{n} is outside 1..=1000"))),
        };
        let answer = self
            .with(move |core| {
                let sample_every = core.policy.drop_sample;
                let report = core.top.lock().unwrap_or_else(|p| p.into_inner()).report(
                    std::time::Instant::now(),
                    sample_every,
                    limit,
                );
                let entries = |talkers: Vec<super::top::Talker>| {
                    talkers
                        .into_iter()
                        .map(|t| api::TopEntry {
                            key: t.key,
                            pps: t.pps,
                            samples: t.samples,
                            reason: t.reason.into(),
                        })
                        .collect()
                };
                Ok(api::GetTopResponse {
                    window_s: report.window_s,
                    sample_every,
                    samples: report.samples,
                    sources: entries(report.sources),
                    prefixes: entries(report.prefixes),
                })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_stats(
        &self,
        request: Request<api::GetStatsRequest>,
    ) -> Result<Response<api::GetStatsResponse>, Status> {
        let interface = request.into_inner().interface;
        let stats = self.with(move |core| core.stats(&interface)).await?;
        let rows = stats
            .rows(true)
            .into_iter()
            .map(|r| api::StatsRow {
                reason: r.reason,
                action: r.action,
                packets: r.packets,
                bytes: r.bytes,
            })
            .collect();
        Ok(Response::new(api::GetStatsResponse { rows }))
    }
}

/// A visit's key and day, or INVALID_ARGUMENT naming `visits[i]`.
fn parse_visit(index: usize, visit: &api::Visit, today: Day) -> Result<(VisitorKey, Day), Status> {
    let key =
        visitor_key(visit.ip.trim()).map_err(|r| invalid(format!("visits[{index}].ip"), r))?;
    let day = match visit.day.trim() {
        "" => today,
        text => Day::parse(text).map_err(|r| invalid(format!("visits[{index}].day"), r))?,
    };
    if day > today {
        return Err(invalid(
            format!("visits[{index}].day"),
            format!("{day} is after today ({today}, UTC)"),
        ));
    }
    Ok((key, day))
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<api::ExportVisitorsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Visitors for Handle {
    async fn record_visits(
        &self,
        request: Request<api::RecordVisitsRequest>,
    ) -> Result<Response<api::RecordVisitsResponse>, Status> {
        let visits = request.into_inner().visits;
        check_batch("visits", visits.len())?;
        let today = self.today().await?;
        let mut history = HistoryBuilder::default();
        for (index, visit) in visits.iter().enumerate() {
            let (key, day) = parse_visit(index, visit, today)?;
            history.push(key, day);
        }
        let history = history.finish();
        let counts = self.with(move |core| core.record(history, Origin::Api)).await?;
        Ok(Response::new(api::RecordVisitsResponse {
            recorded: counts.recorded,
            outside_window: counts.outside_window,
        }))
    }

    async fn remove_visitors(
        &self,
        request: Request<api::RemoveVisitorsRequest>,
    ) -> Result<Response<api::RemoveVisitorsResponse>, Status> {
        let ips = request.into_inner().ips;
        check_batch("ips", ips.len())?;
        let keys = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| visitor_key(ip.trim()).map_err(|r| invalid(format!("ips[{i}]"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        let removed = self.with(move |core| core.remove_visitors(&keys)).await?;
        Ok(Response::new(api::RemoveVisitorsResponse { removed }))
    }

    async fn list_visitors(
        &self,
        request: Request<api::ListVisitorsRequest>,
    ) -> Result<Response<api::ListVisitorsResponse>, Status> {
        let request = request.into_inner();
        let size = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => return Err(invalid("page_size", format!("{n} is over the {MAX_PAGE} limit"))),
        } as usize;
        let from = match request.page_token.as_str() {
            "" => None,
            token => Some(
                visitor_key(token)
                    .map_err(|_| invalid("page_token", format!("`{token}` is not a page token")))?,
            ),
        };
        let page = self
            .with(move |core| {
                let mut entries = core.history().iter_from(from).take(size + 1);
                let visitors: Vec<_> = entries
                    .by_ref()
                    .take(size)
                    .map(|(k, d)| api::VisitorEntry {
                        ip: display_key(k),
                        last_seen: d.to_string(),
                    })
                    .collect();
                let next = entries.next().map(|(k, _)| display_key(k)).unwrap_or_default();
                Ok(api::ListVisitorsResponse { visitors, next_page_token: next })
            })
            .await?;
        Ok(Response::new(page))
    }

    async fn count_visitors(
        &self,
        _: Request<api::CountVisitorsRequest>,
    ) -> Result<Response<api::CountVisitorsResponse>, Status> {
        let (v4, v6) =
            self.with(|core| Ok((core.history().v4.len(), core.history().v6.len()))).await?;
        Ok(Response::new(api::CountVisitorsResponse { v4, v6, total: v4 + v6 }))
    }

    async fn import_visitors(
        &self,
        request: Request<Streaming<api::ImportVisitorsRequest>>,
    ) -> Result<Response<api::ImportVisitorsResponse>, Status> {
        let _permit = self.imports.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_IMPORTS} imports are already running; retry when one finishes"
            ))
        })?;
        let mut stream = request.into_inner();
        let mut importer: Option<Importer> = None;
        let today = self.today().await?;
        loop {
            let message = tokio::time::timeout(IMPORT_IDLE, stream.next()).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no data for {} s; the import was abandoned and changed nothing",
                    IMPORT_IDLE.as_secs()
                ))
            })?;
            let Some(message) = message else { break };
            let message = message?;
            let importer = match &mut importer {
                Some(importer) => importer,
                None => {
                    let format = Format::parse(&message.format).ok_or_else(|| {
                        invalid(
                            "format",
                            format!("`{}` is not auto, plain, csv or combined", message.format),
                        )
                    })?;
                    let name =
                        if message.file_name.is_empty() { "import" } else { &message.file_name };
                    importer.insert(Importer::new(name, format, today))
                }
            };
            importer.feed(&message.chunk).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let importer = importer.ok_or_else(|| invalid("chunk", "the stream was empty"))?;
        let (history, lines) =
            importer.finish().map_err(|e| Status::invalid_argument(e.to_string()))?;
        let counts = self.with(move |core| core.record(history, Origin::Api)).await?;
        Ok(Response::new(api::ImportVisitorsResponse {
            lines: lines as u64,
            recorded: counts.recorded,
            outside_window: counts.outside_window,
        }))
    }

    type ExportVisitorsStream = ExportStream;

    async fn export_visitors(
        &self,
        _: Request<api::ExportVisitorsRequest>,
    ) -> Result<Response<Self::ExportVisitorsStream>, Status> {
        // Each export holds a copy of the history until its reader is done: bounded, like
        // imports, so many readers at once cannot take the host's memory.
        let permit = self.exports.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_EXPORTS} exports are already running; retry when one finishes"
            ))
        })?;
        // A copy (compact: the per-day bitmaps) so a slow reader never holds the core.
        let history = self.with(|core| Ok(core.history().clone())).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut entries = history
                .iter()
                .map(|(k, d)| api::VisitorEntry { ip: display_key(k), last_seen: d.to_string() });
            loop {
                let chunk: Vec<_> = entries.by_ref().take(10_000).collect();
                if chunk.is_empty() {
                    break;
                }
                let message = api::ExportVisitorsResponse { visitors: chunk };
                if tx.blocking_send(Ok(message)).is_err() {
                    break; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Decodes a batch of admissions; a ticket that is not even base64 of the right length is
/// refused here (INVALID_ARGUMENT) and counted as malformed by the core's verifier path.
/// A token as a request presents it: (kind, text, presented address).
type Presented = (Option<Kind>, String, Option<std::net::IpAddr>);

/// A request's tokens. Only the form of the fields is
/// checked here; the tokens themselves are the verifiers' to judge.
fn parse_admissions(admissions: &[api::AdmissionTicket]) -> Result<Vec<Presented>, Status> {
    check_batch("admissions", admissions.len())?;
    admissions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let kind = match a.kind.trim() {
                "" => None,
                name => Some(
                    Kind::parse(name).map_err(|r| invalid(format!("admissions[{i}].kind"), r))?,
                ),
            };
            let ip = match a.ip.trim() {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    invalid(format!("admissions[{i}].ip"), format!("`{text}` is not an IP address"))
                })?),
            };
            Ok((kind, a.ticket.clone(), ip))
        })
        .collect()
}

/// The status's per-kind token counts.
fn token_status(counts: &TokenCounts) -> Vec<api::TokenKindStatus> {
    let mut kinds: Vec<&'static str> = Kind::ALL.iter().map(|k| k.name()).collect();
    kinds.push("unknown");
    kinds
        .into_iter()
        .map(|name| {
            let kind = Kind::parse(name).ok();
            api::TokenKindStatus {
                kind: name.into(),
                verified: kind.and_then(|k| counts.verified.get(&k)).copied().unwrap_or(0),
                admitted: kind.and_then(|k| counts.admitted.get(&k)).copied().unwrap_or(0),
                refused: counts
                    .refused
                    .iter()
                    .filter(|((k, _), _)| *k == name)
                    .map(|((_, reason), count)| api::RejectionCount {
                        reason: (*reason).into(),
                        count: *count,
                    })
                    .collect(),
            }
        })
        .filter(|k| k.verified + k.admitted > 0 || !k.refused.is_empty())
        .collect()
}

#[tonic::async_trait]
impl Admissions for Handle {
    async fn admit(
        &self,
        request: Request<api::AdmitRequest>,
    ) -> Result<Response<api::AdmitResponse>, Status> {
        let presented = parse_admissions(&request.into_inner().admissions)?;
        // Verified before the core is taken: signatures cost CPU, not the core's time.
        let now = self.clock.now();
        let mut accepted = Vec::with_capacity(presented.len());
        for (index, (kind, token, ip)) in presented.iter().enumerate() {
            match self.tokens.verify(*kind, token, *ip, now) {
                Ok(token) => accepted.push(token),
                Err(refused) => return Err(Fault::Refused { index, refused }.into()),
            }
        }
        let admitted = self
            .with(move |core| core.redeem(&accepted, Batch::AllOrNothing, None, Origin::Api))
            .await?
            .len() as u64;
        Ok(Response::new(api::AdmitResponse { admitted }))
    }

    async fn admit_stream(
        &self,
        request: Request<Streaming<api::AdmitRequest>>,
    ) -> Result<Response<api::AdmitResponse>, Status> {
        let mut stream = request.into_inner();
        let mut admitted = 0;
        while let Some(message) = stream.next().await {
            let message = message?;
            let response = self.admit(Request::new(message)).await?;
            admitted += response.into_inner().admitted;
        }
        Ok(Response::new(api::AdmitResponse { admitted }))
    }
}

fn parse_rule(index: usize, rule: &api::Rule, now: u64) -> Result<StoredRule, Status> {
    let field = |name: &str| format!("rules[{index}].{name}");
    let list = parse_list(&field("list"), &rule.list)?;
    let net: IpNet = parse_cidr(rule.cidr.trim()).map_err(|r| invalid(field("cidr"), r))?;
    if rule.expires_at != 0 && rule.expires_at <= now {
        return Err(invalid(
            field("expires_at"),
            format!("{} ({}) is in the past", rule.expires_at, crate::text::utc(rule.expires_at)),
        ));
    }
    if rule.expires_at > now.saturating_add(MAX_EXPIRY_S) {
        return Err(invalid(
            field("expires_at"),
            format!("{} is more than 3650 days from now (unix seconds)", rule.expires_at),
        ));
    }
    if rule.comment.len() > MAX_COMMENT {
        return Err(invalid(field("comment"), format!("longer than {MAX_COMMENT} bytes")));
    }
    if let Some((at, c)) = rule.comment.char_indices().find(|(_, c)| c.is_control()) {
        return Err(invalid(
            field("comment"),
            format!(
                "control character U+{:04X} at byte {at}: comments are one line of text",
                c as u32
            ),
        ));
    }
    Ok(StoredRule {
        list,
        net,
        comment: rule.comment.clone(),
        expires_at: rule.expires_at,
        added_at: now,
    })
}

#[tonic::async_trait]
impl Rules for Handle {
    async fn add_rules(
        &self,
        request: Request<api::AddRulesRequest>,
    ) -> Result<Response<api::AddRulesResponse>, Status> {
        let rules = request.into_inner().rules;
        check_batch("rules", rules.len())?;
        let now = self.clock.now();
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| parse_rule(i, r, now))
            .collect::<Result<Vec<_>, _>>()?;
        let (added, updated) = self.with(move |core| core.add_rules(rules)).await?;
        Ok(Response::new(api::AddRulesResponse { added, updated }))
    }

    async fn remove_rules(
        &self,
        request: Request<api::RemoveRulesRequest>,
    ) -> Result<Response<api::RemoveRulesResponse>, Status> {
        let request = request.into_inner();
        let list = parse_list("list", &request.list)?;
        check_batch("cidrs", request.cidrs.len())?;
        let nets = request
            .cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| parse_cidr(c.trim()).map_err(|r| invalid(format!("cidrs[{i}]"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        let removed = self.with(move |core| core.remove_rules(list, &nets)).await?;
        Ok(Response::new(api::RemoveRulesResponse { removed }))
    }

    async fn list_rules(
        &self,
        request: Request<api::ListRulesRequest>,
    ) -> Result<Response<api::ListRulesResponse>, Status> {
        let list = parse_list("list", &request.into_inner().list)?;
        let rules = self
            .with(move |core| {
                Ok(core
                    .list_rules(list)
                    .into_iter()
                    .map(|r| api::Rule {
                        list: list.name().into(),
                        cidr: r.rule.net.to_string(),
                        comment: r.rule.comment,
                        expires_at: r.rule.expires_at,
                        source: if r.from_config { "config" } else { "api" }.into(),
                        added_at: r.rule.added_at,
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(api::ListRulesResponse { rules }))
    }
}
