#!/usr/bin/env bash
# The one command that runs every test (README, .ci/run): installs what the
# tests need, builds, checks formatting and lints, then runs unit and
# integration tests (the latter one at a time: they share the machine's two
# cores and its hugepages).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --workspace --locked
./target/release/rvs-hugepages reserve 1536
./target/release/rvs-ci
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo test --release --workspace --locked -- --test-threads=1
FUZZ_SECS="${FUZZ_SECS:-60}" bash ci/fuzz.sh
