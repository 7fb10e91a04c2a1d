//! `mode = "auto"`: the daemon watches how many packets per second come from unknown sources
//! and switches the kernel between monitor (calm) and enforce (attack), with hysteresis in
//! both level (enter above `enter_pps`, leave below `exit_pps`) and time.
//!
//! Entering is judged over a window, not a run: the attack phase starts once the rate was at
//! or above `enter_pps` for `sustain_s` seconds in all within the last `2 × sustain_s`. A
//! flood that pauses now and then (2 s on, 1.5 s off) cannot keep itself under the radar by
//! breaking a run of seconds, while one short spike (less than `sustain_s` seconds) still does
//! not switch. Leaving takes `cool_down_s` consecutive seconds below `exit_pps`: a pulsing
//! flood keeps the filter enforcing, and the mode does not flap.
//!
//! The rate is the sum of the kernel's counters for unknown sources (passed within budget,
//! over budget, fragments), read once a second: counting happens in the data plane anyway,
//! so watching costs the packet path nothing.
use std::{collections::VecDeque, time::Instant};

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
    /// Calm: the measured intervals of the entry window, (end, seconds, at or above
    /// `enter_pps`), oldest first.
    recent: VecDeque<(Instant, f64, bool)>,
    /// Attack: since when the rate has been below `exit_pps` without a break.
    calm_since: Option<Instant>,
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
            recent: VecDeque::new(),
            calm_since: None,
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
        let Some(cfg) = cfg else {
            self.recent.clear();
            self.calm_since = None;
            return None;
        };
        let switch = match self.phase {
            Phase::Calm => self.flooded(cfg, at, secs),
            Phase::Attack => self.calmed(cfg, at),
        };
        if !switch {
            return None;
        }
        self.phase = match self.phase {
            Phase::Calm => Phase::Attack,
            Phase::Attack => Phase::Calm,
        };
        self.since = now_unix;
        self.recent.clear();
        self.calm_since = None;
        match self.phase {
            Phase::Attack => self.to_enforce += 1,
            Phase::Calm => self.to_monitor += 1,
        }
        Some(self.phase)
    }

    /// Calm: whether the rate was at or above `enter_pps` for `sustain_s` seconds of the last
    /// `2 × sustain_s` (the interval just measured included).
    fn flooded(&mut self, cfg: &AutoMode, at: Instant, secs: f64) -> bool {
        let window = 2.0 * f64::from(cfg.sustain_s);
        self.recent.push_back((at, secs, self.unknown_pps >= f64::from(cfg.enter_pps)));
        while self
            .recent
            .front()
            .is_some_and(|(end, _, _)| at.duration_since(*end).as_secs_f64() >= window)
        {
            self.recent.pop_front();
        }
        let above: f64 = self.recent.iter().filter(|(_, _, above)| *above).map(|(_, s, _)| s).sum();
        above + 1e-9 >= f64::from(cfg.sustain_s)
    }

    /// Attack: whether the rate has stayed below `exit_pps` for `cool_down_s` seconds.
    fn calmed(&mut self, cfg: &AutoMode, at: Instant) -> bool {
        if self.unknown_pps >= f64::from(cfg.exit_pps) {
            self.calm_since = None;
            return false;
        }
        let since = *self.calm_since.get_or_insert(at);
        at.duration_since(since).as_secs_f64() + 1e-9 >= f64::from(cfg.cool_down_s)
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
        // Three measured seconds above enter_pps switch on; then calm is timed from its first
        // second below exit_pps, and the switch back comes after cool_down_s (5) more.
        let phases = run(&mut w, &[2000, 2000, 2000, 2000, 100, 100, 100, 100, 100, 100, 100]);
        assert_eq!(
            phases,
            [Calm, Calm, Attack, Attack, Attack, Attack, Attack, Attack, Attack, Calm, Calm]
        );
        assert_eq!((w.to_enforce, w.to_monitor), (1, 1));
    }

    #[test]
    fn a_flood_that_pauses_is_still_a_flood() {
        use Phase::*;
        let mut w = Watch::new(Phase::Calm, 0);
        // Two seconds on, one off, over and over: no run of three seconds above enter_pps,
        // but four of every six seconds are.
        let phases = run(&mut w, &[5000, 5000, 0, 5000, 5000, 0, 5000, 5000, 0, 5000, 5000, 0]);
        assert_eq!(phases[..4], [Calm, Calm, Calm, Attack], "{phases:?}");
        assert!(phases[4..].iter().all(|p| *p == Attack), "the pauses do not end it: {phases:?}");
        // Two on, a second and a half off (measured each second: on, on, half, off).
        let mut w = Watch::new(Phase::Calm, 0);
        let phases = run(&mut w, &[3000, 3000, 1500, 0, 3000, 3000, 1500, 0]);
        assert!(phases.contains(&Attack), "{phases:?}");
    }

    #[test]
    fn short_spikes_and_the_band_between_thresholds_do_not_flap() {
        use Phase::*;
        let mut w = Watch::new(Phase::Calm, 0);
        // One spike of 2 s, shorter than sustain_s, does not switch on; nor do two spikes
        // further apart than the window.
        let phases = run(&mut w, &[5000, 5000, 0, 0, 0, 0, 0, 5000, 5000, 0, 0]);
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
