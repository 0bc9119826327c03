#!/usr/bin/env bash
# Instructions per fast-path operation, counted by callgrind (the VM this
# project is measured on has no hardware counters for perf): installs
# valgrind, builds, runs rvs-ipp and prints a Markdown table.
# Arguments go to rvs-ipp (e.g. --n 50000).
set -euo pipefail
cd "$(dirname "$0")/.."
RVS_EXTRA_PKGS=valgrind bash ci/setup.sh
cargo build --release -p rvs-benches --locked
exec ./target/release/rvs-ipp "$@"
