#!/usr/bin/env bash
# Regenerate the seed corpora (fuzz/corpus/<target>/seed-*) from the tests: tiny image tarballs
# shaped like scripts/make-busybox-image.sh's (a stand-in busybox of a few bytes, so each seed
# stays a few KiB) and the hostile archives of crates/rxd-image/tests/unpack.rs; macaroons
# from crates/rxd-bakery/tests/vectors.json; request bodies from the tests and LXD's API docs.
# Only seed-* files are committed; what the fuzzer adds next to them is ignored by git.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 seed.py
