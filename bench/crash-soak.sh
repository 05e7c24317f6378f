#!/usr/bin/env bash
# Soak the kill -9 test: many rounds of "write + fsync through the FUSE file, SIGKILL the daemon
# at a random moment, restart it, check every acknowledged write". Needs root and FUSE.
# Usage: bench/crash-soak.sh [ROUNDS]   (default 2000; the regular test runs 100)
set -euo pipefail
cd "$(dirname "$0")/.."
OBD_CRASH_ROUNDS=${1:-2000} cargo test --release --locked -p obd-tools --test crash \
  kill9_during_writes -- --nocapture
