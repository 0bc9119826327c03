#!/usr/bin/env bash
# Where a switch's PMD spends its time in one rvs-bench scenario, on a
# machine without hardware counters: perf's cpu-clock event samples by
# timer. Runs SCENARIO (64-byte frames) on SWITCH (rvs or ovs) alone and
# samples the PMD's core (CPU 1) in the middle of the window; prints the
# share of samples per library and per symbol. RVSD=<rvsd> picks the build;
# RVS_OTHER_CONFIG=KEY=VALUE[,...] sets rvs's other_config (rvs-bench's
# --rvs-other-config), e.g. vhost-own-rx=true.
#   usage: bash benches/profile.sh rvs|ovs SCENARIO [perf.data]
set -euo pipefail
cd "$(dirname "$0")/.."
sw=${1:?usage: profile.sh rvs|ovs SCENARIO [perf.data]}
sc=${2:?usage: profile.sh rvs|ovs SCENARIO [perf.data]}
out=${3:-/tmp/rvs-profile-$sw-$sc.data}
case $sw in rvs | ovs) ;; *)
  echo "profile.sh: switch '$sw': expected rvs or ovs" >&2
  exit 2
  ;;
esac
RVS_EXTRA_PKGS=linux-perf bash ci/setup.sh
cargo build --release -p rvs-benches -p rvs-control --locked
./target/release/rvs-hugepages reserve 1536 >/dev/null
log=$(mktemp)
./target/release/rvs-bench --scenarios "$sc" --sizes 64 --runs 1 --window 12 --warmup 2 \
  --switches "$sw" --latency-loads --port-ops 0 --flow-mods 0 \
  ${RVS_OTHER_CONFIG:+--rvs-other-config "$RVS_OTHER_CONFIG"} \
  --results /dev/null --plot /dev/null >"$log" 2>&1 &
bench=$!
# The window opens 2 s after the switch is up: sample 6 s inside it.
sleep 9
perf record -q -e cpu-clock -F 2999 -C 1 -o "$out" -- sleep 6 >/dev/null 2>&1
wait "$bench" || { cat "$log" >&2; exit 1; }
grep '^run' "$log"
perf report -i "$out" --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
perf report -i "$out" --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
