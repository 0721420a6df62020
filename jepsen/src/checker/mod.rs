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

pub mod counter;
pub mod linearizable;
pub mod lock;
pub mod set;
pub mod watch;
