#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target for a bounded time (FUZZ_SECS each,
# default 60), starting from the committed seeds; replays every input that
# once crashed (fuzz/regressions/<target>/) first. A crash fails the run and
# leaves its input under fuzz/artifacts/<target>/: add it to
# fuzz/regressions/<target>/ with the fix.
# Built without a sanitizer (-s none) so the stable toolchain will do.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS="${FUZZ_SECS:-60}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -s none -O
for t in packet pipeline openflow ovsdb unixctl; do
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    cargo fuzz run -s none -O "$t" "regressions/$t" -- -runs=0
  fi
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "fuzz $t: ${SECS}s"
  rc=0
  cargo fuzz run -s none -O "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$SECS" -rss_limit_mb=4096 -print_final_stats=1 \
    > "target/fuzz-$t.log" 2>&1 || rc=$?
  grep -E "^(Done|stat::number_of_executed_units)|panicked|SUMMARY|crash-" "target/fuzz-$t.log" || true
  if [ "$rc" != 0 ]; then
    tail -40 "target/fuzz-$t.log"
    echo "fuzz $t: crash (input in fuzz/artifacts/$t)"
    exit 1
  fi
done
