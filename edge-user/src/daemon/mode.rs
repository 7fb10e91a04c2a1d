//! The mode asked for (config file or API) and what the kernel runs: under `auto`, the phase
//! the unknown-source rate has put it in.
use tracing::{error, info, warn};

use super::{
    auto::Phase,
    core::{Core, Mirror, Origin},
    fault::Fault,
};
use crate::{policy::Mode, store::Op};

impl Core {
    /// The mode asked for (config or API); `auto` included.
    pub fn mode(&self) -> Mode {
        self.state.mode.unwrap_or(self.policy.mode)
    }

    /// The mode the kernel runs: `auto` resolved to its current phase.
    pub fn kernel_mode(&self) -> Mode {
        match (self.mode(), self.auto.phase) {
            (Mode::Auto, Phase::Attack) => Mode::Enforce,
            (Mode::Auto, Phase::Calm) => Mode::Monitor,
            (mode, _) => mode,
        }
    }

    pub fn set_mode(&mut self, mode: Mode) -> Result<Mode, Fault> {
        let (previous, was) = (self.mode(), self.kernel_mode());
        // Entering `auto` picks its phase before the record is mirrored to the kernel.
        let phase = (self.auto.phase, self.auto.since);
        self.entering_auto(mode, previous, was);
        if let Err(e) = self.change(Op::SetMode(mode), Origin::Api) {
            // Refused before the store: nothing changed, the phase neither. Stored but not yet
            // in the kernel: the mode is in force and the reconcile writes it with this phase.
            if self.state.mode != Some(mode) {
                (self.auto.phase, self.auto.since) = phase;
            }
            return Err(e);
        }
        Ok(previous)
    }

    /// Switching to `auto` keeps what the kernel runs: from enforce it starts in the attack
    /// phase (leaving it takes the cool-down), otherwise calm.
    pub(super) fn entering_auto(&mut self, mode: Mode, previous: Mode, was: Mode) {
        if mode == Mode::Auto && previous != Mode::Auto {
            self.auto.phase = if was == Mode::Enforce { Phase::Attack } else { Phase::Calm };
            self.auto.since = self.clock.now();
            info!(phase = self.auto.phase.name(), "auto: watching unknown sources");
        }
    }

    /// Under `auto`, a daemon restarted during an attack keeps enforcing: if a pinned filter
    /// was enforcing, the phase starts as attack (a restart never opens the gates).
    pub(super) fn resume_auto(&mut self) {
        if self.mode() != Mode::Auto {
            return;
        }
        let enforcing = self
            .interfaces
            .iter()
            .any(|i| crate::filter::pinned_mode(&i.name).is_ok_and(|m| m == Mode::Enforce));
        if enforcing {
            self.auto.phase = Phase::Attack;
            warn!("auto: the filter was enforcing when the daemon stopped; resuming in enforce");
        }
    }

    /// Measures the unknown-source rate; under `auto`, switches the kernel's mode when the
    /// hysteresis says so.
    pub(super) fn watch_unknown(&mut self) {
        let Ok(stats) = self.stats("") else { return };
        let auto = (self.mode() == Mode::Auto).then_some(self.policy.auto);
        let switched = self.auto.observe(
            auto.as_ref(),
            stats.unknown_packets(),
            std::time::Instant::now(),
            self.clock.now(),
        );
        if let (Some(phase), Some(cfg)) = (switched, auto) {
            let pps = self.auto.unknown_pps.round();
            match phase {
                Phase::Attack => warn!(
                    unknown_pps = pps,
                    enter_pps = cfg.enter_pps,
                    sustain_s = cfg.sustain_s,
                    "auto: unknown sources flood; switching to enforce"
                ),
                Phase::Calm => info!(
                    unknown_pps = pps,
                    exit_pps = cfg.exit_pps,
                    cool_down_s = cfg.cool_down_s,
                    "auto: calm again; switching back to monitor"
                ),
            }
            if let Err(e) = self.mirror(Mirror::Config) {
                error!("auto: writing the mode to the kernel: {e}");
            }
        }
    }
}
