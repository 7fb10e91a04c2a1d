//! The rolling window follows the clock, one day at a time, and no further on the clock's
//! word alone.
//!
//! A roll drops the days that left the window, and the visitors seen only on them leave the
//! whitelist for good. A clock that jumps forward (an NTP or RTC error, a host booted with a
//! wrong date) would roll everyone out at once. So a roll that moves the window by more than
//! `window.max_jump_days` days is held: the window stays where it was, the daemon's day stays
//! the last day rolled to, rule expiry and admission purges wait, and the jump is logged,
//! shown in `edge status`, in health (`edge.v1.Background`) and in metrics, until the clock
//! comes back or an operator accepts it with `edge window roll`.
use tracing::{error, info};

use super::{
    core::{Core, Origin},
    fault::Fault,
};
use crate::{history::window_start, store::Op, visitors::Day};

/// What a roll did.
#[derive(Clone, Copy, Debug)]
pub struct Rolled {
    pub from: Option<Day>,
    pub to: Day,
    /// Visitors that left the window.
    pub left: u64,
}

impl Core {
    /// The day the window last rolled to (or, before the first roll of a store, today).
    pub fn rolled_to(&self) -> Day {
        self.state.rolled_to.unwrap_or_else(|| self.clock.today())
    }

    /// The day the window is measured from: the last roll's, or for a store that never rolled
    /// (written by an earlier version) the newest day it holds a visit on.
    pub(super) fn reference_day(&self) -> Option<Day> {
        let history = &self.state.history;
        self.state.rolled_to.or_else(|| {
            let v4 = history.v4.days().map(|(d, _)| d).last();
            let v6 = history.v6.days().map(|(d, _)| d).last();
            v4.max(v6)
        })
    }

    /// Rolls the window to the clock's day if that is later than the last roll. A jump of
    /// more than `window.max_jump_days` is held (FAILED_PRECONDITION, saying how to accept it)
    /// unless `accept`: the operator's say-so.
    pub fn roll_window(&mut self, accept: bool) -> Result<Option<Rolled>, Fault> {
        let clock_day = self.clock.today();
        let from = self.reference_day();
        if let Some(from) = from {
            if clock_day <= from {
                if let Some(held) = self.window_hold.take() {
                    info!(clock = %clock_day, held = %held, "the clock is back; the window follows it again");
                }
                return Ok(None);
            }
            let jump = clock_day.0 - from.0;
            let bound = u32::from(self.policy.max_jump_days);
            if jump > bound && !accept {
                if self.window_hold != Some(clock_day) {
                    error!(
                        rolled_to = %from,
                        clock = %clock_day,
                        jump_days = jump,
                        max_jump_days = bound,
                        "the clock jumped forward; the window is HELD (visitors kept) until the \
                         clock comes back or `edge window roll` accepts the new day"
                    );
                }
                self.window_hold = Some(clock_day);
                return Err(Fault::FailedPrecondition(self.hold_message().expect("held")));
            }
        }
        let first = window_start(clock_day, self.policy.window_days);
        let departed = self.change(Op::Roll { to: clock_day.0, first: first.0 }, Origin::Daemon)?;
        self.window_hold = None;
        let left = departed.len();
        info!(today = %clock_day, left, "rolled the window");
        Ok(Some(Rolled { from, to: clock_day, left }))
    }

    /// While the window is held: what happened and how to go on.
    pub fn hold_message(&self) -> Option<String> {
        let clock = self.window_hold?;
        let rolled = self.reference_day().unwrap_or(clock);
        Some(format!(
            "the clock says {clock}, {} days after the window's last day {rolled} (more than \
             window.max_jump_days = {}): the window is held there and its visitors kept; if \
             the clock is right, `edge window roll` rolls it",
            clock.0.saturating_sub(rolled.0),
            self.policy.max_jump_days
        ))
    }
}
