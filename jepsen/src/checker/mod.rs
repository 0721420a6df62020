//! The checkers: each takes a history (or, for watches, the workload's own
//! record) and says whether a property held, as a typed report with a
//! `to_check_result` conversion into the uniform
//! [`crate::verdict::CheckResult`].
//!
//! - [`linearizable`]: any [`crate::model::Model`], e.g. the register.
//! - [`set`]: unique adds and reads of sets.
//! - [`counter`]: optimistic read-modify-write counters.
//! - [`watch`]: watch streams of several clients against each other and the
//!   final state.
//! - [`lock`]: lease locks with fencing.
//! - [`lease`]: keys attached to leases vanish only after expiry or revoke,
//!   and do vanish then.

pub mod counter;
pub mod lease;
pub mod linearizable;
pub mod lock;
pub mod set;
pub mod watch;

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::history::{Cas, Event, EventType, Grant, History, KeepAlive, Op};
    use crate::model::Register;

    fn random_op(rng: &mut StdRng) -> Op {
        let v = rng.random_range(-2..4i64);
        let maybe = |rng: &mut StdRng| rng.random_bool(0.7).then_some(v);
        match rng.random_range(0..15) {
            0 => Op::Read(maybe(rng)),
            1 => Op::Write(v),
            2 => Op::Cas(Cas {
                expected: maybe(rng),
                new: v,
            }),
            3 => Op::Add(v),
            4 => Op::ReadSet(rng.random_bool(0.7).then(|| vec![v, v + 1])),
            5 => Op::Increment(maybe(rng)),
            6 => Op::Acquire(maybe(rng)),
            7 => Op::Act(v),
            8 => Op::Release(v),
            9 => Op::Expire(v),
            10 => Op::LeaseGrant(Grant {
                ttl: v,
                lease: maybe(rng),
                granted_ttl: maybe(rng),
            }),
            11 => Op::LeasePut(v),
            12 => Op::LeaseKeepAlive(KeepAlive {
                lease: v,
                ttl: maybe(rng),
            }),
            13 => Op::LeaseRevoke(v),
            _ => Op::Delete(v),
        }
    }

    /// Arbitrary event soup: the history is either rejected with an error
    /// or checked, and nothing panics.
    #[test]
    fn checkers_never_panic_on_arbitrary_histories() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut rejected, mut checked) = (0, 0);
        for _ in 0..2000 {
            let mut t = 0;
            let events: Vec<Event> = (0..rng.random_range(0..12u64))
                .map(|index| {
                    t += rng.random_range(0..3);
                    Event {
                        index,
                        time: t,
                        process: rng.random_range(0..3),
                        kind: [
                            EventType::Invoke,
                            EventType::Ok,
                            EventType::Fail,
                            EventType::Info,
                        ][rng.random_range(0..4)],
                        key: rng.random_bool(0.8).then(|| "k".to_owned()),
                        op: random_op(&mut rng),
                        error: None,
                    }
                })
                .collect();
            let history = History::from_events(events);
            let Ok(ops) = history.operations() else {
                rejected += 1;
                continue;
            };
            checked += 1;
            let budget = super::linearizable::Budget::default();
            let _ =
                super::linearizable::check_operations(&Register, &ops, &budget).to_check_result();
            let _ =
                super::set::check_operations(&ops, Default::default()).map(|r| r.to_check_result());
            let _ = super::counter::check_operations(&ops).to_check_result();
            let _ = super::lock::check_operations(&ops).to_check_result();
            let opts = super::lease::LeaseOptions {
                fault_windows: vec![(1, 3), (2, u64::MAX)],
                ..Default::default()
            };
            let _ = super::lease::check_operations(&ops, &opts).to_check_result();
        }
        assert!(
            rejected > 100 && checked > 100,
            "rejected {rejected}, checked {checked}"
        );
    }
}
