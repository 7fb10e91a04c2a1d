//! `mode = "auto"`: the daemon watches how many packets per second come from unknown sources
//! and switches the kernel between monitor (calm) and enforce (attack), with hysteresis in
//! both level (enter above `enter_pps`, leave below `exit_pps`) and time (`sustain_s` to
//! switch on, `cool_down_s` to switch off), so a flood that pulses does not flap the mode.
//!
//! The rate is the sum of the kernel's counters for unknown sources (passed within budget,
//! over budget, fragments), read once a second: counting happens in the data plane anyway,
//! so watching costs the packet path nothing.
use std::time::Instant;

use crate::policy::AutoMode;

/// What the kernel runs under `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Calm,
    Attack,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Calm => "monitor",
            Self::Attack => "enforce",
        }
    }
}

/// The watcher's state; lives as long as the daemon.
#[derive(Debug)]
pub struct Watch {
    pub phase: Phase,
    /// Unix seconds of the last switch (or of the start).
    pub since: u64,
    /// Switches made since the daemon started: to enforce, and back to monitor.
    pub to_enforce: u64,
    pub to_monitor: u64,
    /// The last measured rate of unknown-source packets.
    pub unknown_pps: f64,
    last: Option<(u64, Instant)>,
    /// Since when the rate has been on the far side of the threshold that would switch.
    beyond_since: Option<Instant>,
}

impl Watch {
    pub fn new(phase: Phase, now_unix: u64) -> Self {
        Self {
            phase,
            since: now_unix,
            to_enforce: 0,
            to_monitor: 0,
            unknown_pps: 0.0,
            last: None,
            beyond_since: None,
        }
    }

    /// Takes the unknown-packet counter (monotonic, summed over interfaces) at `at`. With
    /// `cfg` (the mode is `auto`), returns the new phase when it switches; without, it only
    /// measures the rate (a metric in every mode).
    pub fn observe(
        &mut self,
        cfg: Option<&AutoMode>,
        unknown_packets: u64,
        at: Instant,
        now_unix: u64,
    ) -> Option<Phase> {
        let previous = self.last.replace((unknown_packets, at));
        let (packets, then) = previous?;
        let secs = at.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        // A counter that went back (a filter re-attached from scratch) restarts the rate.
        self.unknown_pps = unknown_packets.saturating_sub(packets) as f64 / secs;
        match cfg {
            Some(cfg) => self.step(cfg, at, now_unix),
            None => {
                self.beyond_since = None;
                None
            }
        }
    }

    fn step(&mut self, cfg: &AutoMode, at: Instant, now_unix: u64) -> Option<Phase> {
        let (beyond, hold_s, next) = match self.phase {
            Phase::Calm => {
                (self.unknown_pps >= f64::from(cfg.enter_pps), cfg.sustain_s, Phase::Attack)
            }
            Phase::Attack => {
                (self.unknown_pps < f64::from(cfg.exit_pps), cfg.cool_down_s, Phase::Calm)
            }
        };
        if !beyond {
            self.beyond_since = None;
            return None;
        }
        let since = *self.beyond_since.get_or_insert(at);
        if at.duration_since(since).as_secs_f64() + 1e-9 < f64::from(hold_s) {
            return None;
        }
        self.phase = next;
        self.since = now_unix;
        self.beyond_since = None;
        match next {
            Phase::Attack => self.to_enforce += 1,
            Phase::Calm => self.to_monitor += 1,
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CFG: AutoMode = AutoMode { enter_pps: 1000, exit_pps: 500, sustain_s: 3, cool_down_s: 5 };

    /// Feeds one rate per second; returns the phase after each second.
    fn run(watch: &mut Watch, rates: &[u64]) -> Vec<Phase> {
        let start = Instant::now();
        let mut total = 0;
        watch.observe(Some(&CFG), total, start, 0);
        rates
            .iter()
            .enumerate()
            .map(|(i, pps)| {
                total += pps;
                watch.observe(
                    Some(&CFG),
                    total,
                    start + Duration::from_secs(i as u64 + 1),
                    i as u64,
                );
                watch.phase
            })
            .collect()
    }

    #[test]
    fn a_sustained_flood_switches_on_and_a_long_calm_switches_off() {
        let mut w = Watch::new(Phase::Calm, 0);
        use Phase::*;
        // Above for 3 s: the first second starts the clock, the switch comes after 3 s more.
        let phases = run(&mut w, &[2000, 2000, 2000, 2000, 100, 100, 100, 100, 100, 100, 100]);
        assert_eq!(
            phases,
            [Calm, Calm, Calm, Attack, Attack, Attack, Attack, Attack, Attack, Calm, Calm]
        );
        assert_eq!((w.to_enforce, w.to_monitor), (1, 1));
    }

    #[test]
    fn short_spikes_and_the_band_between_thresholds_do_not_flap() {
        use Phase::*;
        let mut w = Watch::new(Phase::Calm, 0);
        // Spikes of 2 s, broken by a calm second, never switch on.
        let phases = run(&mut w, &[5000, 5000, 0, 5000, 5000, 0, 5000, 5000]);
        assert!(phases.iter().all(|p| *p == Calm), "{phases:?}");
        // Under attack, a rate between exit (500) and enter (1000) keeps enforcing; a dip
        // below exit shorter than the cool-down does too.
        let mut w = Watch::new(Phase::Attack, 0);
        let phases = run(&mut w, &[700, 700, 700, 700, 700, 700, 100, 100, 100, 700, 100]);
        assert!(phases.iter().all(|p| *p == Attack), "{phases:?}");
        assert_eq!((w.to_enforce, w.to_monitor), (0, 0));
    }

    #[test]
    fn a_counter_that_restarts_is_not_a_flood() {
        let mut w = Watch::new(Phase::Calm, 0);
        let t = Instant::now();
        w.observe(Some(&CFG), 1_000_000, t, 0);
        w.observe(Some(&CFG), 10, t + Duration::from_secs(1), 1);
        assert_eq!(w.unknown_pps, 0.0);
    }
}
