#!/usr/bin/env bash
# rxd against LXD 5.0 (Debian's packages) on this machine, in one run: both on temporary state
# dirs with HTTPS on loopback, the same busybox image and the same trusted client certificate;
# the workloads alternate between the two servers round by round so machine noise hits both.
# Prints the medians and the ratios rxd/LXD; the reports stay in the printed work directory.
#
#   bash scripts/bench-vs-lxd.sh            # ROUNDS=3 SECONDS_PER=5 STARTS=5 CERTS=100000 FLOOD=4200
#
# Run as root on Debian 12. LXD gets a `dir` pool, no network bridge, and no outgoing fetches:
# its background downloads (instance types, image refreshes) are sent to a dead proxy on
# loopback and image auto-update is off.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
STARTS=${STARTS:-5}
CERTS=${CERTS:-100000}
INSTANCES=${INSTANCES:-100}
CONTAINERS=${CONTAINERS:-5}
# Idle connections 127.0.0.2 holds open while the trusted client (127.0.0.1) measures its latency.
FLOOD=${FLOOD:-4200}
# Rounds of the Debian 12 systemd image: import, launch to `running`, clean stop.
DEBIAN_ROUNDS=${DEBIAN_ROUNDS:-3}
# ONLY=debian runs the Debian part alone (both servers set up, nothing else measured).
ONLY=${ONLY:-}

need=()
for pkg in lxd lxd-client busybox-static xz-utils mmdebstrap bc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked --workspace --bins
bin=$PWD/target/release
# How much of the start-up layout (crates/rxd/build.rs) this build matches: names carry hashes
# of the build's configuration, and a stale list silently lays out less.
listed=$(sort -u crates/rxd/startup.order | wc -l)
found=$(nm "$bin/rxd" | awk '{print $NF}' | sort -u | comm -12 - <(sort -u crates/rxd/startup.order) | wc -l)
echo "start-up layout: $found of $listed listed functions found in rxd"
# A fresh list matches about 89% (the rest are libc's names); one at 79% cost 1.8 MiB idle.
if ((found * 100 < listed * 85)); then
  echo "warning: crates/rxd/startup.order is stale; run scripts/startup-order.sh" >&2
fi

# Nothing leaves the machine: LXD's fetches go to a closed port on loopback.
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
export HTTP_PROXY=$http_proxy HTTPS_PROXY=$https_proxy no_proxy=127.0.0.1,localhost,::1 NO_PROXY=127.0.0.1,localhost,::1

work=$(mktemp -d /tmp/rxd-vs-lxd.XXXXXX)
chmod 711 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$bin/rxd-bench" keygen "$work/client"
bash scripts/make-busybox-image.sh "$work/bb.tar.gz" >/dev/null

wait_socket() { # SOCKET
  for _ in $(seq 600); do
    curl -s --unix-socket "$1" http://x/1.0 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer on $1" >&2
  return 1
}

start_lxd() { # DIR
  LXD_DIR=$1 lxd --logfile "$1.log" &
  LXD_PID=$!
  pids+=("$LXD_PID")
  LXD_DIR=$1 lxd waitready --timeout 120
}
start_rxd() { # DIR
  "$bin/rxd" --dir "$1" --log warn 2>"$1.log" &
  RXD_PID=$!
  pids+=("$RXD_PID")
  wait_socket "$1/unix.socket"
}
stop() { # PID
  kill "$1"
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

echo "== setting up LXD and rxd in $work"
mkdir -p "$work/lxd" && chmod 711 "$work/lxd"
start_lxd "$work/lxd"
LXD_DIR=$work/lxd lxd init --preseed <<'EOF'
config:
  core.https_address: 127.0.0.1:18443
  images.auto_update_interval: "0"
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
LXD_DIR=$work/lxd lxc config trust add "$work/client/client.crt"
LXD_DIR=$work/lxd lxc image import "$work/bb.tar.gz" --alias bb >/dev/null

start_rxd "$work/rxd"
rxc() { RXD_DIR=$work/rxd RXC_CONF=$work/rxc "$bin/rxc" "$@"; }
rxc config set core.https_address 127.0.0.1:18444
rxc config trust add "$work/client/client.crt"
rxc image import "$work/bb.tar.gz" --alias bb >/dev/null

server() { # LABEL ROUND
  local label=$1 round=$2
  if [[ $label == lxd ]]; then
    "$bin/rxd-bench" server --label lxd --https 127.0.0.1:18443 --socket "$work/lxd/unix.socket" \
      --client "$work/client" --server-cert "$work/lxd/server.crt" --pid "$LXD_PID" \
      --seconds "$SECONDS_PER" --instances "$INSTANCES" --containers "$CONTAINERS" \
      --flood "$FLOOD" --out "$work/lxd-server-$round.json"
  else
    "$bin/rxd-bench" server --label rxd --https 127.0.0.1:18444 --socket "$work/rxd/unix.socket" \
      --client "$work/client" --server-cert "$work/rxd/server.crt" --pid "$RXD_PID" \
      --seconds "$SECONDS_PER" --instances "$INSTANCES" --containers "$CONTAINERS" \
      --flood "$FLOOD" --out "$work/rxd-server-$round.json"
  fi
}
if [[ $ONLY != debian ]]; then
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    if ((round % 2)); then server lxd "$round"; server rxd "$round"; else server rxd "$round"; server lxd "$round"; fi
  done
fi

# The Debian 12 systemd image (scripts/make-debian-image.sh, cached under target/): import, launch
# until `systemctl is-system-running` answers running or degraded, clean stop (SIGRTMIN+3, no
# kill), delete; alternating servers round by round. Wall-clock seconds of each step.
debian=target/debian-image/debian12.tar.gz
bash scripts/make-debian-image.sh "$debian" >/dev/null
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
cli() { # LABEL ARGS...
  local label=$1; shift
  if [[ $label == lxd ]]; then LXD_DIR=$work/lxd lxc "$@"; else rxc "$@"; fi
}
debian_round() { # LABEL ROUND
  local label=$1 round=$2 t name=d$2
  t=$(now); cli "$label" image import "$debian" --alias d12 >/dev/null; echo "$label import $(since "$t")"
  t=$(now); cli "$label" launch d12 "$name" >/dev/null; echo "$label launch $(since "$t")"
  until state=$(cli "$label" exec "$name" -- systemctl is-system-running 2>/dev/null); [[ $state == running || $state == degraded ]]; do
    sleep 0.05
  done
  echo "$label launch-to-running $(since "$t")"
  t=$(now); cli "$label" stop "$name" >/dev/null; echo "$label stop $(since "$t")"
  cli "$label" delete "$name" >/dev/null
  cli "$label" image delete d12 >/dev/null
}
echo "== Debian 12 (systemd), $DEBIAN_ROUNDS rounds"
for round in $(seq "$DEBIAN_ROUNDS"); do
  if ((round % 2)); then debian_round lxd "$round"; debian_round rxd "$round"
  else debian_round rxd "$round"; debian_round lxd "$round"; fi
done | tee "$work/debian.txt"
echo "== Debian 12 medians (seconds) and rxd/LXD"
for step in import launch launch-to-running stop; do
  med() { awk -v l="$1" -v s="$step" '$1 == l && $2 == s {print $3}' "$work/debian.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  r=$(med rxd) l=$(med lxd)
  printf '%-18s rxd %6.2f  LXD %6.2f  ratio %.2f\n' "$step" "$r" "$l" "$(echo "$r / $l" | bc -l)"
done
stop "$LXD_PID"
stop "$RXD_PID"
[[ $ONLY == debian ]] && exit 0

# Start-up and idle memory: a state holding nothing, and one trusting $CERTS certificates.
echo "== start-up, empty and with $CERTS trusted certificates"
for tag in empty certs; do
  mkdir -p "$work/lxd-$tag" && chmod 711 "$work/lxd-$tag"
  start_lxd "$work/lxd-$tag"
  if [[ $tag == certs ]]; then
    python3 scripts/lxd-seed-certs.py "$CERTS" "$work/client/client.crt" |
      LXD_DIR=$work/lxd-$tag lxd sql global - >/dev/null
  fi
  stop "$LXD_PID"
  start_rxd "$work/rxd-$tag"
  stop "$RXD_PID"
  if [[ $tag == certs ]]; then "$bin/rxd-bench" seed-rxd --dir "$work/rxd-$tag" --count "$CERTS"; fi
done
startup() { # LABEL TAG ROUND
  local label=$1 tag=$2 round=$3 name=$2
  [[ $tag == certs ]] && name=certs100k
  if [[ $label == lxd ]]; then
    "$bin/rxd-bench" startup --label lxd --tag "$name" --socket "$work/lxd-$tag/unix.socket" \
      --rounds 1 --out "$work/lxd-startup-$tag-$round.json" -- \
      env LXD_DIR="$work/lxd-$tag" lxd --logfile "$work/lxd-$tag.log"
  else
    "$bin/rxd-bench" startup --label rxd --tag "$name" --socket "$work/rxd-$tag/unix.socket" \
      --rounds 1 --out "$work/rxd-startup-$tag-$round.json" -- \
      "$bin/rxd" --dir "$work/rxd-$tag" --log warn
  fi
}
for round in $(seq "$STARTS"); do
  for tag in empty certs; do
    if ((round % 2)); then startup lxd $tag "$round"; startup rxd $tag "$round"
    else startup rxd $tag "$round"; startup lxd $tag "$round"; fi
  done
done

echo "== $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(date -u +%F)"
echo "== LXD $(LXD_DIR=$work/lxd lxd --version) vs rxd $("$bin/rxd" --version 2>/dev/null | awk '{print $2}')"
"$bin/rxd-bench" compare --a "$work"/rxd-*.json --b "$work"/lxd-*.json --out "$work/compare.json"
echo "== reports in $work"
