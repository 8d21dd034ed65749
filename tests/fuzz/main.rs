//! Fuzzing of every parser of outside input, on the stable toolchain: a small mutational fuzzer
//! of our own (no coverage feedback), aware of JSON, seeded from `tests/fuzz-corpus/<target>/`.
//!
//! - `cargo test --test fuzz` replays every seed and every crash ever found
//!   (`tests/fuzz-corpus/<target>/crashes/`), then runs a short deterministic round per target.
//! - `scripts/fuzz.sh [seconds per target]` runs the long round (the ignored test below); each
//!   new crash is written to the target's `crashes/` directory and the executions per target are
//!   printed (docs/security.md records the figures).
// Test code may panic: a failed set-up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mutate;
mod targets;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use mutate::{Mutator, Rng};
use targets::{Target, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// Files directly in `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside targets are expected findings: keep their message instead of printing it.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let fuzzing = LAST_PANIC.with(|p| {
                let mut p = p.borrow_mut();
                let inside = p.is_some();
                if inside {
                    *p = Some(info.to_string());
                }
                inside
            });
            if !fuzzing {
                default(info);
            }
        }));
    });
}

/// Runs `target` on `input`: `Err` describes a crash (panic) or a broken property.
fn run(target: Target, input: &[u8]) -> Result<(), String> {
    quiet_panics();
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(String::new()));
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    let message = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_default();
    match outcome {
        Ok(result) => result.map_err(|broken| format!("property: {broken}")),
        Err(_) => Err(format!("panic: {message}")),
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = files(&corpus_dir(target))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "target {target} has no seeds");
    seeds
}

#[test]
fn every_seed_and_every_recorded_crash_is_handled() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = corpus_dir(name);
        for path in files(&dir).into_iter().chain(files(&dir.join("crashes"))) {
            replayed += 1;
            if let Err(e) = run(*target, &std::fs::read(&path).unwrap()) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "the corpus is in place");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fuzzes each target for `budget` (or `executions`, whichever ends first); returns
/// (target, executions, findings).
fn fuzz(
    budget: Duration,
    executions: u64,
    seed: u64,
    save: bool,
) -> Vec<(String, u64, Vec<String>)> {
    let mut report = Vec::new();
    for (index, (name, target)) in TARGETS.iter().enumerate() {
        let seeds = seeds(name);
        let mut mutator = Mutator::new(Rng::new(seed ^ (index as u64 + 1)));
        let started = Instant::now();
        let mut done = 0;
        let mut findings = Vec::new();
        while done < executions && started.elapsed() < budget {
            let input = mutator.mutate(&seeds);
            done += 1;
            if let Err(e) = run(*target, &input) {
                let file = corpus_dir(name)
                    .join("crashes")
                    .join(format!("{:016x}.bin", mutate::fingerprint(&input)));
                if save {
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(&file, &input).unwrap();
                }
                findings.push(format!("{}: {e}", file.display()));
            }
        }
        report.push(((*name).to_owned(), done, findings));
    }
    report
}

#[test]
fn a_short_deterministic_round_finds_nothing() {
    let report = fuzz(Duration::from_secs(20), 300, 0x5eed, false);
    let findings: Vec<String> = report.into_iter().flat_map(|(_, _, f)| f).collect();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

/// The long round: `FUZZ_SECONDS` per target (default 60). Run by `scripts/fuzz.sh`.
#[test]
#[ignore = "long-running: scripts/fuzz.sh"]
fn long_round() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("fuzz: {seconds} s per target, seed {seed}");
    let report = fuzz(Duration::from_secs(seconds), u64::MAX, seed, true);
    let mut total = 0;
    for (name, executions, findings) in &report {
        println!(
            "fuzz: {name:<20} {executions:>10} executions {:>8.0}/s {:>3} findings",
            *executions as f64 / seconds as f64,
            findings.len()
        );
        for finding in findings.iter().take(5) {
            println!("  {finding}");
        }
        total += findings.len();
    }
    assert_eq!(
        total, 0,
        "findings were saved under tests/fuzz-corpus/*/crashes/"
    );
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
