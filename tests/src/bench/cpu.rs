//! CPU time of the servers and of this benchmark process around a case, from `/proc` and
//! `getrusage`, reported per request ([`CpuPerOp`]).

use std::time::Duration;

use super::report::CpuPerOp;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`): fixed at 100 by the kernel's
/// ABI on every architecture Linux exports it for, whatever the kernel's own `HZ`.
const USER_HZ: f64 = 100.0;

/// CPU used so far by the given server processes and by this process.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    servers: Option<Duration>,
    client: Option<Duration>,
}

impl CpuSample {
    /// Reads the CPU time used so far. A server that cannot be read (not running, or
    /// `/proc` missing) makes the server part unknown.
    pub fn take(server_pids: &[u32]) -> Self {
        let servers = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|&pid| process_cpu(pid))
                .sum::<Option<Duration>>()
        };
        Self {
            servers,
            client: own_cpu(),
        }
    }

    /// CPU per request between `self` (taken before) and `after`, for `ops` requests.
    pub fn per_op(&self, after: &Self, ops: u64) -> Option<CpuPerOp> {
        if ops == 0 {
            return None;
        }
        let us = |a: Option<Duration>, b: Option<Duration>| {
            Some(b?.checked_sub(a?)?.as_secs_f64() * 1e6 / ops as f64)
        };
        Some(CpuPerOp {
            server_us: us(self.servers, after.servers)?,
            client_us: us(self.client, after.client)?,
        })
    }
}

/// User + system time of every thread of `pid`, living or exited.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses itself, so fields are
/// counted from the last `)`.
fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

fn own_cpu() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Some(tv(u.user_time()) + tv(u.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 \
                    1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu(line), Some(Duration::from_millis(3250)));
        assert_eq!(parse_stat_cpu("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu("no parenthesis"), None);
    }

    #[test]
    fn this_process_uses_cpu_and_per_op_divides() {
        let pid = std::process::id();
        let before = CpuSample::take(&[pid]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = CpuSample::take(&[pid]);
        let per = before.per_op(&after, 10).expect("both readable");
        assert!(per.client_us > 0.0, "{per:?}");
        assert!(per.server_us >= 0.0, "{per:?}");
        assert_eq!(before.per_op(&after, 0), None);
        assert_eq!(CpuSample::take(&[]).per_op(&after, 10), None);
    }
}
