//! The concurrency limit of one key (`--max-concurrent N`): the runs
//! holding a slot, by PID (with the process start time, so a recycled PID is
//! not mistaken for the holder). Holders whose process is gone — SIGKILLed,
//! crashed, rebooted — are swept by the next run that looks, so a slot can
//! never leak. No descriptor is held while the command runs: a command that
//! daemonizes cannot keep the slot of a run that ended.

use serde::{Deserialize, Serialize};

use super::Holder;

/// The stored slots of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Slots {
    /// The limit of the last run that took a slot, for `--state`.
    pub max: u64,
    pub holders: Vec<Holder>,
}

impl Slots {
    /// Forgets holders that are no longer alive; returns how many.
    pub fn sweep(&mut self, alive: &dyn Fn(&Holder) -> bool) -> usize {
        let before = self.holders.len();
        self.holders.retain(|h| alive(h));
        before - self.holders.len()
    }

    /// True when a run may take a slot under limit `max`.
    pub fn has_room(&self, max: u64) -> bool {
        (self.holders.len() as u64) < max
    }

    /// Takes a slot for `me` (replacing any stale entry with its PID).
    pub fn take(&mut self, me: &Holder, max: u64) {
        self.release(me.pid);
        self.holders.push(me.clone());
        self.max = max;
    }

    /// Gives back the slot of `pid`, if it holds one.
    pub fn release(&mut self, pid: i32) {
        self.holders.retain(|h| h.pid != pid);
    }

    /// The PIDs holding slots.
    pub fn pids(&self) -> Vec<i32> {
        self.holders.iter().map(|h| h.pid).collect()
    }

    /// Moves every stored time back by `delta` (the wall clock went back).
    pub fn shift_back(&mut self, delta: u64) {
        for h in &mut self.holders {
            h.since_ns = h.since_ns.saturating_sub(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i32) -> Holder {
        Holder {
            pid,
            start: Some(1),
            since_ns: 0,
        }
    }

    #[test]
    fn n_slots_then_full_then_swept() {
        let mut s = Slots::default();
        for pid in 1..=3 {
            assert!(s.has_room(3));
            s.take(&h(pid), 3);
        }
        assert!(!s.has_room(3));
        // A smaller limit from another run sees the key as full too.
        assert!(!s.has_room(2));
        assert_eq!(s.sweep(&|x: &Holder| x.pid != 2), 1);
        assert_eq!(s.pids(), [1, 3]);
        assert!(s.has_room(3));
        s.release(1);
        s.release(42);
        assert_eq!(s.pids(), [3]);
    }

    #[test]
    fn a_recycled_pid_entry_is_replaced_not_doubled() {
        let mut s = Slots::default();
        s.take(&h(5), 2);
        s.take(&h(5), 2);
        assert_eq!(s.pids(), [5]);
    }
}
