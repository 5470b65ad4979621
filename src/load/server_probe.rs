//! Reads a local server's memory and CPU time from /proc (`--server-pid`),
//! summed over the process and its descendants so a wrapper (a shell, `cargo
//! run`) still measures the server it started.

use std::collections::HashMap;
use std::fs;

/// Memory and CPU time of a process tree at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Σ VmRSS, in KiB.
    pub rss_kib: u64,
    /// Σ user + system CPU time, in ns (clock-tick resolution).
    pub cpu_ns: u64,
}

/// Samples `pid` and its descendants; `None` if `pid` is gone or /proc is
/// not there.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let tick_ns = clock_tick_ns();
    let mut total = ProcessSample {
        rss_kib: 0,
        cpu_ns: 0,
    };
    let (rss, ticks) = read_one(pid)?;
    total.rss_kib += rss;
    total.cpu_ns += ticks * tick_ns;
    for child in descendants(pid) {
        if let Some((rss, ticks)) = read_one(child) {
            total.rss_kib += rss;
            total.cpu_ns += ticks * tick_ns;
        }
    }
    Some(total)
}

/// VmRSS (KiB) and utime + stime (ticks) of one process.
fn read_one(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some((vm_rss_kib(&status).unwrap_or(0), cpu_ticks(&stat)?))
}

/// The `VmRSS:` line of /proc/PID/status, in KiB (absent for zombies).
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// utime + stime from /proc/PID/stat. The command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15)
    // are at indexes 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent pid from /proc/PID/stat (field 4).
fn parent(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|stat| parent(&stat))
        {
            children.entry(ppid).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    // A process tree is finite and acyclic; the bound guards against a
    // pathological /proc snapshot.
    while let Some(next) = frontier.pop() {
        if found.len() > 100_000 {
            break;
        }
        if let Some(kids) = children.get(&next) {
            found.extend_from_slice(kids);
            frontier.extend_from_slice(kids);
        }
    }
    found
}

fn clock_tick_ns() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second > 0 {
        1_000_000_000 / ticks_per_second as u64
    } else {
        10_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (my (odd) server) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1000 123456 789 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(parent(stat), Some(17));
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tws-realtime\nVmPeak:\t  9000 kB\nVmRSS:\t  5120 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(5120));
    }

    #[test]
    fn the_current_process_can_be_sampled() {
        let sample = sample(std::process::id()).expect("this process exists");
        assert!(sample.rss_kib > 0);
    }
}
