//! Which seeds a test runs, and how a failure is reported: with its seed and
//! the one command that replays it.
//!
//! * `cargo test -p sim`: [`DEFAULT_SEEDS`] seeds per scenario (fewer for
//!   a costly one, [`run_costly_seeds`]).
//! * `SIM_SEEDS=N`: N seeds per scenario (a costly one: its share).
//! * `SIM_SEED=S`: only seed S (the replay); add `SIM_TRACE=1` to print
//!   the failing run's whole trace.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use crate::checker::{CheckPolicy, Summary, check};
use crate::recorder::{Recorder, Trace};

/// Seeds per scenario in a plain `cargo test -p sim`.
pub const DEFAULT_SEEDS: u64 = 20;

/// The seeds this process runs, from `SIM_SEED` / `SIM_SEEDS`.
pub fn seeds() -> Vec<u64> {
    seeds_by_default(DEFAULT_SEEDS)
}

/// [`seeds`] for a scenario whose plain run takes `default` seeds (a costly
/// one takes fewer): `SIM_SEEDS=N` gives it the same share of N, so the CI
/// set's 60 seeds per scenario cost a costly one what 15 do for
/// `default = 5`.
fn seeds_by_default(default: u64) -> Vec<u64> {
    if let Some(seed) = env_number("SIM_SEED") {
        return vec![seed];
    }
    let count =
        env_number("SIM_SEEDS").map_or(default, |asked| (asked * default).div_ceil(DEFAULT_SEEDS));
    (1..=count).collect()
}

fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a non-negative integer, got {raw:?}")),
    )
}

/// Prints the whole trace when `SIM_TRACE` is set (for a replayed seed).
fn dump() {
    if std::env::var_os("SIM_TRACE").is_some() {
        for record in Recorder::latest_trace().unwrap_or_default() {
            eprintln!("{:>6} {:>10.3?} {:?}", record.seq, record.at, record.what);
        }
    }
}

/// The command that replays `seed` of `scenario` in test file `test`.
pub fn replay_command(test: &str, scenario: &str, seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test -p sim --test {test} -- {scenario} --exact")
}

/// Runs `run` for every seed, checks every trace against the invariants
/// under `policy`, and fails at the first broken seed with its replay
/// command. `run` returns the trace, or why the scenario's own expectations
/// failed.
pub fn run_seeds(
    test: &str,
    scenario: &str,
    policy: CheckPolicy,
    run: impl Fn(u64) -> Result<Trace, String>,
) {
    run_seed_list(test, scenario, policy, seeds(), run);
}

/// [`run_seeds`] for a costly scenario: `default` seeds in a plain run
/// instead of [`DEFAULT_SEEDS`] (`SIM_SEED` / `SIM_SEEDS` apply as usual).
pub fn run_costly_seeds(
    test: &str,
    scenario: &str,
    policy: CheckPolicy,
    default: u64,
    run: impl Fn(u64) -> Result<Trace, String>,
) {
    run_seed_list(test, scenario, policy, seeds_by_default(default), run);
}

fn run_seed_list(
    test: &str,
    scenario: &str,
    policy: CheckPolicy,
    seeds: Vec<u64>,
    run: impl Fn(u64) -> Result<Trace, String>,
) {
    let started = Instant::now();
    let mut total = Summary::default();
    for &seed in &seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed)));
        let failure = match outcome {
            Err(panic) => {
                eprintln!(
                    "SIM FAILURE {scenario} seed {seed}: panicked\n  replay: {}",
                    replay_command(test, scenario, seed)
                );
                resume_unwind(panic);
            }
            Ok(Err(reason)) => Some(reason),
            Ok(Ok(trace)) => match check(&trace, policy) {
                Ok(summary) => {
                    total.published += summary.published;
                    total.received += summary.received;
                    total.required += summary.required;
                    total.clients += summary.clients;
                    None
                }
                Err(violations) => Some(
                    violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n    "),
                ),
            },
        };
        if let Some(reason) = failure {
            dump();
            let replay = replay_command(test, scenario, seed);
            eprintln!("SIM FAILURE {scenario} seed {seed}:\n    {reason}\n  replay: {replay}");
            panic!("{scenario} failed with seed {seed}: {reason}\nreplay: {replay}");
        }
    }
    eprintln!(
        "{scenario}: {} runs in {:.1?} ({} messages taken, {} received, {} client connections)",
        seeds.len(),
        started.elapsed(),
        total.published,
        total.received,
        total.clients
    );
}
