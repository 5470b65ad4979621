//! Replays every committed fuzz seed (`fuzz/seeds/<target>/*`) through the
//! target bodies in `ws_realtime::fuzzing`, so `cargo test` on stable Rust
//! guards every input the fuzzer ever found interesting and every crash
//! that was fixed.

use std::path::{Path, PathBuf};

use ws_realtime::fuzzing::TARGETS;

fn seeds_of(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable seed directory").path())
        .filter(|path| path.is_file())
        .collect();
    seeds.sort();
    seeds
}

/// Runs every seed of `target` and lists every one that fails, with the
/// finding it reports.
fn replay(target: &str) {
    let body = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .expect("target listed in ws_realtime::fuzzing::TARGETS");
    let seeds = seeds_of(target);
    assert!(!seeds.is_empty(), "no seeds committed for {target}");
    let mut failures = Vec::new();
    for seed in &seeds {
        let data = std::fs::read(seed).expect("readable seed");
        if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
            let finding = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let name = seed.file_name().expect("a file").to_string_lossy();
            failures.push(format!("{name}: {finding}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} seeds fail:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[test]
fn client_frame_seeds_replay_cleanly() {
    replay("client_frame");
}

#[test]
fn core_ops_seeds_replay_cleanly() {
    replay("core_ops");
}

#[test]
fn upgrade_seeds_replay_cleanly() {
    replay("upgrade");
}

#[test]
fn source_payload_seeds_replay_cleanly() {
    replay("source_payload");
}

#[test]
fn client_wire_seeds_replay_cleanly() {
    replay("client_wire");
}

#[test]
fn extension_offer_seeds_replay_cleanly() {
    replay("extension_offer");
}

#[test]
fn every_target_has_a_fuzz_binary_and_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs missing"
        );
        assert!(!seeds_of(name).is_empty(), "fuzz/seeds/{name} is empty");
    }
}
