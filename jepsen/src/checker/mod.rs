//! The checkers: each takes a history (or a workload's own record) and says
//! whether a property held, as a typed report convertible to a
//! [`crate::verdict::CheckResult`].

pub mod counter;
pub mod linearizable;
pub mod set;
pub mod watch;
