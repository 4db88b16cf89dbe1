#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (fuzz/, cargo fuzz with libFuzzer
# and AddressSanitizer) for SECONDS each: request bodies and records,
# timestamps, the window summary header, bus segments and their recovery,
# commit records. Seeds come from fuzz/corpus/TARGET (kept in the repo);
# what a run finds new goes to a scratch directory unless FUZZ_KEEP=1
# (then into fuzz/corpus, to commit after `cargo fuzz cmin`). A crash stops
# the script with the input that caused it and the command to replay it.
#
# Usage: scripts/fuzz.sh [SECONDS=20] [TARGET…]
# Needs the nightly toolchain (rustup); installs cargo-fuzz from the crate
# registry into $HOME/.cache/logpipe/cargo-fuzz once.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  # Every target in fuzz/fuzz_targets/, so a new one runs without a list to edit.
  for file in fuzz/fuzz_targets/*.rs; do TARGETS+=("$(basename "$file" .rs)"); done
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "the nightly toolchain is not installed: cargo fuzz needs it (rustup toolchain install nightly --profile minimal)" >&2
  exit 1
fi
FUZZ_HOME="$HOME/.cache/logpipe/cargo-fuzz"
if [ ! -x "$FUZZ_HOME/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz 0.13.2 (the crate registry) into $FUZZ_HOME…" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$FUZZ_HOME" >&2
fi
export PATH="$FUZZ_HOME/bin:$PATH"
# Apart from the main build: nightly, instrumented.
export CARGO_TARGET_DIR="$HOME/.cache/logpipe/fuzz-target"

cd fuzz
cargo +nightly fuzz build -O >&2
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus/$target" "$SCRATCH/$target"
  if [ -n "${FUZZ_KEEP:-}" ]; then dirs=("corpus/$target"); else dirs=("$SCRATCH/$target" "corpus/$target"); fi
  log="$SCRATCH/$target.log"
  if ! cargo +nightly fuzz run -O "$target" "${dirs[@]}" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target crashed: the input is under fuzz/artifacts/$target/; replay with" \
      "(cd fuzz && cargo +nightly fuzz run -O $target artifacts/$target/<file>)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$target: ${runs:-?} executions in ${SECONDS_EACH}s, no crash ($(ls "corpus/$target" | wc -l) seeds)"
done
