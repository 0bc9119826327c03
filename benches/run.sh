#!/usr/bin/env bash
# The end-to-end benchmark in one command: installs OVS-DPDK (the incumbent),
# builds, reserves hugepages, runs rvs-bench and appends to benches/RESULTS.md.
# Arguments go to rvs-bench (e.g. --scenarios normal --sizes 64,1518 --runs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
RVS_EXTRA_PKGS=openvswitch-switch-dpdk bash ci/setup.sh
cargo build --release --workspace --locked
# Many-flow scenarios hold every replayed frame in a 2 KB mbuf.
./target/release/rvs-hugepages reserve 3072
exec ./target/release/rvs-bench "$@"
