//! The real program, loaded once per test binary, and the fixture check every verdict test
//! makes against it: a frame goes through BPF_PROG_TEST_RUN, and exactly one packet, with the
//! frame's bytes, must be counted under the expected reason and disposition, with the expected
//! action. Fixtures are data: a table of [`Case`]s under a policy.
use std::{
    net::IpAddr,
    path::Path,
    sync::{Mutex, MutexGuard, OnceLock},
};

use edge::{
    filter::{XDP_DROP, XDP_PASS},
    import::{self, Format},
    Day, Filter, Policy,
};
use edge_common::{
    keys::Counter,
    reason::{Reason, REASON_NAMES},
};

/// What the program must do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Passed, counted under the reason.
    Pass(Reason),
    /// Dropped, counted under the reason.
    Drop(Reason),
    /// Monitor mode: passed, counted as a would-drop under the reason.
    WouldDrop(Reason),
}

/// One fixture: what the frame is, the frame, and what the program must do with it.
#[derive(Clone, Debug)]
pub struct Case {
    pub what: String,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

/// A [`Case`].
pub fn case(what: impl Into<String>, frame: impl AsRef<[u8]>, expect: Expect) -> Case {
    Case { what: what.into(), frame: frame.as_ref().to_vec(), expect }
}

/// The loaded program and the admissions a setup made (revoked by the next one).
pub struct Loaded {
    pub filter: Filter,
    admitted: Vec<IpAddr>,
}

/// The program, loaded once for the whole test binary (loading allocates the 512 MiB visitor
/// bitmap); each test takes it and sets it up with its own policy.
pub fn loaded() -> MutexGuard<'static, Loaded> {
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let filter = Filter::load().expect("loading the XDP program (BPF_PROG_LOAD)");
            Mutex::new(Loaded { filter, admitted: Vec::new() })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Loaded {
    /// Makes the maps hold exactly `policy` (config text) and `visitors` (CSV) as of `today`,
    /// with budgets reset and the previous setup's admissions revoked.
    pub fn setup(&mut self, policy: &str, visitors: &str, today: &str) {
        self.setup_admitted(policy, visitors, today, &[]);
    }

    /// [`Loaded::setup`], with admissions: (`IP`, seconds from now until they expire).
    pub fn setup_admitted(
        &mut self,
        policy: &str,
        visitors: &str,
        today: &str,
        admitted: &[(&str, i64)],
    ) {
        let maps = &mut self.filter.maps;
        for ip in self.admitted.drain(..) {
            maps.revoke(ip).unwrap();
        }
        let today = Day::parse(today).unwrap();
        let policy = Policy::parse(policy, "fixture.toml", Path::new(".")).expect("fixture policy");
        let history =
            import::parse(visitors, "fixture.csv", Format::Csv, today).expect("fixture visitors");
        maps.apply(&policy, &history, today).unwrap();
        maps.reset_budgets().unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                as i64;
        for (ip, from_now) in admitted {
            let ip: IpAddr = ip.parse().unwrap();
            maps.admit(ip, (now + from_now) as u64).unwrap();
            self.admitted.push(ip);
        }
    }

    /// Runs the case's frame and checks the action and the counters.
    #[track_caller]
    pub fn check(&mut self, case: &Case) {
        let (action, reason, would_drop) = match case.expect {
            Expect::Pass(reason) => (XDP_PASS, reason, false),
            Expect::Drop(reason) => (XDP_DROP, reason, false),
            Expect::WouldDrop(reason) => (XDP_PASS, reason, true),
        };
        let what = &case.what;
        let before = self.filter.maps.stats().unwrap();
        let (got, _) = self.filter.run(&case.frame, 1).unwrap();
        let delta = self.filter.maps.stats().unwrap().since(&before);
        let counted = if would_drop { delta.would_drop(reason) } else { delta.applied(reason) };
        let seen: Vec<_> = delta.rows(false).into_iter().map(|r| (r.reason, r.action)).collect();
        assert_eq!(got, action, "{what}: action (counted {seen:?})");
        assert_eq!(
            counted,
            Counter { packets: 1, bytes: case.frame.len() as u64 },
            "{what}: expected one packet under {}{} but counted {seen:?}",
            REASON_NAMES[reason as usize],
            if would_drop { " (would drop)" } else { "" },
        );
        assert_eq!(delta.total_packets(), 1, "{what}: counted more than once: {seen:?}");
    }

    /// Checks every case, in order (later ones see the budgets earlier ones spent).
    #[track_caller]
    pub fn check_all(&mut self, cases: &[Case]) {
        for case in cases {
            self.check(case);
        }
    }
}
