//! The same seed gives the same trace: a failure found once can be replayed.

use sim::recorder::Trace;
use sim::seeds::seeds;

use crate::churn::churn;
use crate::fan_out::fan_out;

/// The first record where two traces differ, if any.
fn first_difference(a: &Trace, b: &Trace) -> Option<String> {
    let position = a.iter().zip(b).position(|(x, y)| x != y);
    match position {
        Some(i) => Some(format!("record {i}: {:?} vs {:?}", a[i], b[i])),
        None if a.len() != b.len() => Some(format!("lengths {} vs {}", a.len(), b.len())),
        None => None,
    }
}

#[test]
fn the_same_seed_replays_the_same_trace() {
    for &seed in seeds().iter().take(3) {
        let first = fan_out(seed, 10, 100).expect("fan-out run");
        let second = fan_out(seed, 10, 100).expect("fan-out run");
        assert!(first.len() > 100, "the trace records the run");
        if let Some(difference) = first_difference(&first, &second) {
            panic!("fan-out seed {seed} diverged at {difference}");
        }
        let first = churn(seed).expect("churn run");
        let second = churn(seed).expect("churn run");
        if let Some(difference) = first_difference(&first, &second) {
            panic!("churn seed {seed} diverged at {difference}");
        }
    }
}
