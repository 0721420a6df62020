//! Watch: delivering every change, in order, exactly once, to the watchers of a range.
//!
//! # Layout
//! - [`hub`]: the member-wide registry of watchers, fed by apply, with catch-up of
//!   lagging or historical watchers from the change log.

pub mod hub;

pub use hub::{HeaderFn, WatchHub, WatchSpec, WatcherKey};
