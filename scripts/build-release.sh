#!/usr/bin/env bash
# The binaries the scripts run and the package ships: rxd, rxd-shim and the tools in
# target/release; rxc in target/client, built with the client profile (Cargo.toml says why).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins --exclude rxc
cargo build --profile client --locked -p rxc
