#!/usr/bin/env bash
# Crash-consistency soak (issue 23): workers run concurrent operations (create, start, stop,
# snapshot, restore, rename, config, delete) while the real daemon is killed with SIGKILL at
# random moments; after each restart every instance, snapshot and image the API lists must be
# whole and usable, and nothing on disk may be left that no row owns. The test suite runs the
# same test for 20 seconds; this runs it for SECONDS (default 1800). A failure prints the seed:
# RXD_SOAK_SEED=<seed> bash scripts/soak.sh repeats the same choices.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-1800}"
cargo build --workspace --bins --locked --features rxd/failpoints
RXD_SOAK_SECONDS="$seconds" cargo test -p rxc --locked --test crashes \
  a_daemon_killed_at_random_moments_under_load_stays_consistent -- --nocapture
