//! Tokens in the daemon: the verifiers (token/) shared by the API, the admission feed and the
//! admission endpoint, which verify outside the core's lock; the counts by kind and reason;
//! their key files re-read when they change; and `Core::redeem`, the one path from accepted
//! tokens to admissions, where the replay limit is enforced against the store's state.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use edge_common::keys::Addr;
use tracing::{info, warn};

use super::{
    admissions::modified,
    core::{Core, Origin},
    fault::Fault,
    jwks_fetch::{cache_path, FetchState},
};
use crate::{
    policy::{AdmissionSettings, JwksSource},
    store::{Op, TokenUse},
    ticket::Keyring,
    token::{jwks, Accepted, ClaimId, Kind, Refusal, Verifiers},
    visitors::admission_key,
};

/// Tokens whose uses the store holds at once (each until the token expires): as many as the
/// admitted map's capacity, twice over.
pub const TOKEN_USES_CAPACITY: usize = 2 * edge_common::maps::ADMITTED_CAPACITY as usize;

/// Verified, admitted and refused tokens since the daemon started.
#[derive(Clone, Debug, Default)]
pub struct TokenCounts {
    /// Tokens whose form, signature and claims held, by kind.
    pub verified: BTreeMap<Kind, u64>,
    /// Sources admitted by a token, by kind (a verified token may still be a replay).
    pub admitted: BTreeMap<Kind, u64>,
    /// By kind (`unknown` when it was not told or configured) and reason.
    pub refused: BTreeMap<(&'static str, &'static str), u64>,
}

impl TokenCounts {
    pub fn refused_of(&self, kind: Kind) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.refused.iter().filter(move |((k, _), _)| *k == kind.name()).map(|((_, r), n)| (*r, *n))
    }
}

/// The verifiers, swapped whole when a key file changes, and their counts.
pub struct Tokens {
    settings: AdmissionSettings,
    verifiers: RwLock<Arc<Verifiers>>,
    counts: Mutex<TokenCounts>,
    /// The key files a verifier read, and their modification times then.
    files: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
    /// `jwks_url`: how the fetcher is doing.
    fetch: Mutex<FetchState>,
}

impl Tokens {
    /// Reads the verifiers' key files, and for a JWKS URL the keys cached by an earlier run
    /// (so a restart while the URL is down keeps them, up to their age).
    pub fn load(settings: &AdmissionSettings, state_dir: &Path) -> anyhow::Result<Self> {
        let verifiers = Verifiers::from_settings(settings).map_err(anyhow::Error::msg)?;
        if let (Some(jwt), Some(JwksSource::Url { url, .. })) =
            (&verifiers.jwt, settings.jwt.as_ref().map(|j| &j.keys))
        {
            if let Some((set, fetched_at)) = jwks::read_cache(&cache_path(state_dir), url) {
                info!(keys = set.entries.len(), fetched_at, "admission.jwt: cached key set read");
                jwt.keys.put(set, fetched_at);
            }
        }
        Ok(Self {
            settings: settings.clone(),
            verifiers: RwLock::new(Arc::new(verifiers)),
            counts: Mutex::default(),
            files: Mutex::new(watched(settings)),
            fetch: Mutex::default(),
        })
    }

    /// The fetcher's outcome: None for a good fetch.
    pub fn fetched(&self, error: Option<String>) {
        let mut state = self.fetch.lock().expect("fetch lock");
        if error.is_some() {
            state.failures += 1;
        }
        state.last_error = error;
    }

    /// For keys fetched from `jwks_url`: how many are held (0 before the first fetch) and
    /// their age.
    pub fn jwks_held(&self, now: u64) -> Option<(usize, Option<u64>)> {
        let jwt = self.verifiers().jwt.clone()?;
        jwt.keys.max_age_s?;
        Some(match jwt.keys.get() {
            Some(c) => (c.set.entries.len(), Some(now.saturating_sub(c.fetched_at))),
            None => (0, None),
        })
    }

    /// `edge status`'s line for `jwks_url`: empty without one.
    pub fn jwks_status(&self, now: u64) -> String {
        let Some(jwt) = self.verifiers().jwt.clone() else { return String::new() };
        let Some(max_age) = jwt.keys.max_age_s else { return String::new() };
        let error = self.fetch.lock().expect("fetch lock").last_error.clone();
        let error = error.map(|e| format!("; last fetch failed: {e}")).unwrap_or_default();
        match jwt.keys.get() {
            None => format!("stale: no key set fetched yet, every JWT is refused{error}"),
            Some(c) if !jwt.keys.fresh(c.fetched_at, now) => format!(
                "stale: keys fetched {} s ago, past jwks_max_age_s ({max_age}); every JWT is \
                 refused{error}",
                now.saturating_sub(c.fetched_at)
            ),
            Some(c) => format!(
                "ok ({} keys, fetched {} s ago){error}",
                c.set.entries.len(),
                now.saturating_sub(c.fetched_at)
            ),
        }
    }

    pub fn verifiers(&self) -> Arc<Verifiers> {
        self.verifiers.read().expect("verifiers lock").clone()
    }

    /// Verifies a token and counts the outcome.
    pub fn verify(
        &self,
        kind: Option<Kind>,
        token: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Accepted, Refusal> {
        let verdict = self.verifiers().verify(kind, token, source, now);
        match &verdict {
            Ok(accepted) => *self.lock().verified.entry(accepted.kind).or_default() += 1,
            Err(refusal) => self.count_refused(refusal),
        }
        verdict
    }

    pub fn count_refused(&self, refusal: &Refusal) {
        let kind = refusal.kind.map_or("unknown", Kind::name);
        *self.lock().refused.entry((kind, refusal.reason)).or_default() += 1;
    }

    fn count_admitted(&self, kind: Kind) {
        *self.lock().admitted.entry(kind).or_default() += 1;
    }

    pub fn counts(&self) -> TokenCounts {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenCounts> {
        self.counts.lock().expect("token counts lock")
    }

    /// The edge ticket ring changed (`edge key rotate`, or a reload that set or removed
    /// `admission.keys`): the core read it already.
    pub fn set_edge_ring(&self, ring: Option<Keyring>) {
        let mut verifiers = (*self.verifiers()).clone();
        verifiers.edge = ring;
        *self.verifiers.write().expect("verifiers lock") = Arc::new(verifiers);
    }

    /// Re-reads the Queue-it secret and a JWKS file when either changed. A file that no
    /// longer reads is refused and the keys in use stay; the error is reported until mended.
    pub fn reload_files(&self) -> Result<(), String> {
        let now = watched(&self.settings);
        if *self.files.lock().expect("files lock") == now {
            return Ok(());
        }
        let mut fresh = Verifiers::from_settings(&self.settings)
            .map_err(|e| format!("token keys not reloaded, the old ones stay: {e}"))?;
        let held = self.verifiers();
        // The ticket ring is the core's to reload, and keys from a URL the fetcher's.
        fresh.edge.clone_from(&held.edge);
        if let (Some(new), Some(old), Some(JwksSource::Url { .. })) =
            (&mut fresh.jwt, &held.jwt, self.settings.jwt.as_ref().map(|j| &j.keys))
        {
            new.keys = old.keys.clone();
        }
        *self.verifiers.write().expect("verifiers lock") = Arc::new(fresh);
        *self.files.lock().expect("files lock") = now;
        info!("token keys reloaded (admission.queueit.secret_file, admission.jwt.jwks_file)");
        Ok(())
    }
}

fn watched(settings: &AdmissionSettings) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut files = Vec::new();
    if let Some(q) = &settings.queueit {
        files.push(q.secret_file.clone());
    }
    if let Some(JwksSource::File(path)) = settings.jwt.as_ref().map(|j| &j.keys) {
        files.push(path.clone());
    }
    files.into_iter().map(|path| (modified(&path), path)).map(|(m, p)| (p, m)).collect()
}

/// How a batch of accepted tokens is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// The API's contract: the first refusal refuses the batch and nothing changes.
    AllOrNothing,
    /// The feed and the endpoint: each token stands alone; refused ones are reported (and
    /// counted) and the rest admitted.
    EachAlone,
}

impl Core {
    /// Admits the sources of verified tokens, in one record: each token's use is checked
    /// against the sources it admitted before (its replay limit, `admission.max_sources`), in
    /// this batch too. Returns each token's outcome, in order.
    pub fn redeem(
        &mut self,
        accepted: &[Accepted],
        batch: Batch,
        feed: Option<String>,
        origin: Origin,
    ) -> Result<Vec<Result<u64, Refusal>>, Fault> {
        if origin == Origin::Api {
            self.require_ready()?;
        }
        let max = self.policy.admission.max_sources as usize;
        let now = self.clock.now();
        let mut taken = BTreeMap::new();
        let (mut entries, mut uses, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
        for (index, token) in accepted.iter().enumerate() {
            let source = admission_key(token.source);
            let mut until = token.until;
            if let Some(claim) = token.claim {
                let used = self.take_use(claim.id, source, &mut taken, max).and_then(|first| {
                    // A token presented again admits no longer than its cap from its first use.
                    if let (Some(first), Some(cap)) = (first, token.cap_s) {
                        until = until.min(first.saturating_add(cap));
                    }
                    if until <= now {
                        let detail = "the token's admission ran out (its cap counts from its \
                                      first use)";
                        return Err(("expired", detail.to_string()));
                    }
                    Ok(())
                });
                if let Err((reason, detail)) = used {
                    let refused = Refusal { kind: Some(token.kind), reason, detail };
                    self.tokens.count_refused(&refused);
                    if batch == Batch::AllOrNothing {
                        return Err(Fault::Refused { index, refused });
                    }
                    outcomes.push(Err(refused));
                    continue;
                }
                uses.push(TokenUse {
                    claim: claim.id,
                    expires: claim.expires,
                    source,
                    used_at: now,
                });
            }
            entries.push((source, until));
            outcomes.push(Ok(until));
        }
        if entries.is_empty() && feed.is_none() {
            return Ok(outcomes);
        }
        let day = self.today().0;
        let op = if uses.is_empty() {
            Op::Admit { day, entries, feed }
        } else {
            Op::Redeem { day, entries, uses, feed }
        };
        self.change(op, origin)?;
        for (token, outcome) in accepted.iter().zip(&outcomes) {
            if outcome.is_ok() {
                self.tokens.count_admitted(token.kind);
            }
        }
        Ok(outcomes)
    }

    pub fn jwks_status(&self) -> String {
        self.tokens.jwks_status(self.clock.now())
    }

    pub fn endpoint_status(&self) -> String {
        super::endpoint::status(self.policy.admission.http.as_ref())
    }

    /// Whether `source` may use the token `claim`: a source it admitted before (in the store or
    /// earlier in this batch, `taken`) may, a new one while the token is under `max` sources.
    /// Returns when the token was first used, if it was before this batch.
    fn take_use(
        &self,
        claim: ClaimId,
        source: Addr,
        taken: &mut BTreeMap<ClaimId, Vec<Addr>>,
        max: usize,
    ) -> Result<Option<u64>, (&'static str, String)> {
        let uses = self.state.token_uses.get(&claim);
        let first = uses.map(|u| u.first_used).filter(|t| *t != 0);
        let held = uses.map_or(&[][..], |u| &u.sources[..]);
        let new = taken.entry(claim).or_default();
        if held.contains(&source) || new.contains(&source) {
            return Ok(first);
        }
        let count = held.len() + new.len();
        if count >= max {
            let detail = format!(
                "this token admitted {count} other source(s) already (admission.max_sources = {max})"
            );
            return Err(("replayed", detail));
        }
        if count == 0 && self.state.token_uses.len() >= TOKEN_USES_CAPACITY {
            // Fail closed: a token whose use cannot be remembered admits nothing.
            let detail = format!("{TOKEN_USES_CAPACITY} tokens are held until they expire");
            return Err(("replay_state_full", detail));
        }
        new.push(source);
        Ok(first)
    }

    /// Re-reads token key files that changed (a periodic job).
    pub(super) fn reload_token_files(&mut self) -> Result<(), String> {
        self.tokens.reload_files().inspect_err(|e| warn!("{e}"))
    }
}
