#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets for SECONDS each (default 60) with libFuzzer
# through cargo-fuzz, installing cargo-fuzz if it is missing. Exits non-zero if a target
# crashes; the input that crashed it is left under fuzz/artifacts/<target>/.
#
#   fuzz/run.sh 60
#
# Only a stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, -Cpasses=sancov-module), which stable rustc accepts with
# RUSTC_BOOTSTRAP=1. If AddressSanitizer does not link on this machine, the targets run
# without it (panics and aborts are still caught; the parser is safe Rust anyway).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

sanitizer=address
if ! cargo fuzz build --sanitizer address; then
  echo "== AddressSanitizer build failed; fuzzing without a sanitizer" >&2
  sanitizer=none
  cargo fuzz build --sanitizer none
fi

targets=$(cargo fuzz list)
if [ -z "$targets" ]; then
  echo "== no fuzz target found (cargo fuzz list is empty): nothing was fuzzed" >&2
  exit 1
fi
failed=()
ran=0
for target in $targets; do
  ran=$((ran + 1))
  echo "== fuzz $target for ${seconds}s (sanitizer: $sanitizer)"
  # -print_final_stats=1 reports stat::number_of_executed_units at the end.
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
      -max_total_time="$seconds" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "== crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "== no crash in ${seconds}s per target ($ran targets)"
