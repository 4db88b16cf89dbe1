#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: formatting, lints, and
# every test tier (unit, component, model, end-to-end against the real binary).
#
# Usage: ./scripts/test.sh [extra cargo test args]
#
# Real services a test tier needs are installed and started here, bound to
# 127.0.0.1 only, and stopped on exit. The embedded pipeline needs no
# server; DuckDB (a PyPI package) checks that other engines read the lake.
# PostgreSQL, the Kafka-protocol broker and S3 storage join as the features
# that use them land.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artifacts live outside the clone so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logpipe/target}"
# Two cores: more test threads than that only adds contention.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs), then run this again" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

# External readers: DuckDB (from PyPI) must read the lake as plain
# Hive-partitioned Parquet. Installed once into a venv outside the clone.
VENV="$HOME/.cache/logpipe/venv"
if ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
  step "installing duckdb (PyPI) into $VENV for the external-reader test"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb
fi
export LOGPIPE_TEST_PYTHON="$VENV/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked "$@"
