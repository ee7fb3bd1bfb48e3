#!/usr/bin/env bash
# Regenerate crates/rxd/startup.order: every function of the release `rxd` that runs while it
# starts and serves its first requests (unix socket, HTTPS keep-alive and new connections), as
# recorded by callgrind. The release link lays these out together (see crates/rxd/build.rs).
#
#   bash scripts/startup-order.sh        # as root on Debian 12; installs valgrind if missing
#
# Symbol names carry hashes of the build's configuration, so the list matches release builds
# made the way every script here makes them: `scripts/build-release.sh`.
# Run it again after changing dependencies or the types on the request path (a new generic
# instantiation is a new symbol); `scripts/bench-vs-lxd.sh` says how much of the list
# the binary it measures still matches.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
bash scripts/build-release.sh
bin=$PWD/target/release client=$PWD/target/client
work=$(mktemp -d /tmp/rxd-order.XXXXXX)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.out" \
  "$bin/rxd" --dir "$work/state" >"$work/rxd.log" 2>&1 &
pid=$!
for _ in $(seq 240); do [[ -S $work/state/unix.socket ]] && break; sleep 0.5; done
export RXD_DIR=$work/state RXC_CONF=$work/conf
port=$((20000 + RANDOM % 20000))
"$client/rxc" config set core.https_address "127.0.0.1:$port"
"$bin/rxd-bench" keygen "$work/client" >/dev/null
"$client/rxc" config trust add "$work/client/client.crt"
"$bin/rxd-bench" server --label rxd --https "127.0.0.1:$port" --socket "$work/state/unix.socket" \
  --client "$work/client" --server-cert "$work/state/server.crt" --pid "$pid" \
  --seconds 1 --requests 200 --containers 0 --instances 0 --out "$work/report.json" >/dev/null
kill -TERM "$pid"
wait "$pid" || true
pid=

# callgrind names each function (fn=, cfn=) once, then by number. Names of other objects
# (libc and the like) are kept too: the linker skips names the binary does not define.
python3 - "$work/cg.out" crates/rxd/startup.order <<'PY'
import re, sys
out_file, order = sys.argv[1:]
functions, names, seen = {}, [], set()
for line in open(out_file):
    m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if not m:
        continue
    n, name = m.groups()
    name = functions.setdefault(n, name)
    if name and not name.startswith(("0x", "(")) and name not in seen:
        seen.add(name)
        names.append(name)
open(order, "w").write("".join(n + "\n" for n in names))
print(f"{len(names)} functions in {order}")
PY
