#!/usr/bin/env bash
# Fuzzes every parser of outside input for N seconds each (default 60): our event, Graph
# notifications, Event Grid / CloudEvents, audit records, SCIM and Graph responses, configuration.
# Findings are written to tests/fuzz-corpus/<target>/crashes/ and replayed by `cargo test`.
# Usage: scripts/fuzz.sh [seconds-per-target]   (FUZZ_SEED=<n> repeats a run)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${1:-60}" exec cargo test --release --test fuzz -- --ignored --nocapture long_round
