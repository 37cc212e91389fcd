#!/usr/bin/env bash
# What the agent's data directory costs at the block device (issue 15, "Agent diet"): each agent
# gets its own ext4 file system on a loop device (a file in /var/tmp, `mkfs.ext4` defaults,
# mounted with the kernel's defaults: data=ordered, commit=5, relatime), where it is the only
# writer, and publishes to one collector (embedded broker, data dir elsewhere) with the link up.
# Counted after a warm-up, over the window, per device: write requests and KiB from
# /sys/block/loopN/stat (fields 5 and 7), cache flush requests (field 16 on kernels that report
# it), jbd2 transactions (/proc/fs/jbd2/loopN-8/info, first line) and ext4's
# session_write_kbytes (everything the file system wrote, journal included). Then each agent is
# stopped with SIGTERM and what the stop wrote is counted separately.
#
# Usage: bench/agent-disk.sh [SECONDS] [INTERVAL]        (defaults 300 5)
# Env:   AGENTS="name=/path/to/dozor-agent ..."  peers in the same run (default: current=the
#          worktree's target/debug/dozor-agent); COLLECTOR (default target/debug/dozor-collector);
#        WARMUP seconds before counting (default 45: the start's stamp, spool counter block and
#          their writeback, up to vm.dirty_expire_centisecs = 30 s, settle first).
# Needs root (losetup, mount). No build: build the binaries first.
set -euo pipefail
SECONDS_RUN=${1:-300}
INTERVAL=${2:-5}
WARMUP=${WARMUP:-45}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COLLECTOR=${COLLECTOR:-$TARGET/debug/dozor-collector}
AGENTS=${AGENTS:-current=$TARGET/debug/dozor-agent}
work=$(mktemp -d /var/tmp/dozor-agent-disk.XXXXXX)
pids=()
loops=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for l in "${loops[@]}"; do
    umount "$work/mnt-${l##*/}" 2>/dev/null || true
    losetup -d "$l" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port); http=$(free_port)
"$COLLECTOR" --security-mode open --mqtt-listen 127.0.0.1:$mqtt --http-listen 127.0.0.1:$http \
  --data-dir "$work/c" >"$work/collector.log" 2>&1 & pids+=($!)
sleep 3

declare -A dev bin apid
names=()
for spec in $AGENTS; do
  n=${spec%%=*}; names+=("$n"); bin[$n]=${spec#*=}
  truncate -s 256M "$work/$n.img"
  mkfs.ext4 -q "$work/$n.img"
  l=$(losetup --find --show "$work/$n.img"); loops+=("$l"); dev[$n]=${l##*/}
  mkdir -p "$work/mnt-${dev[$n]}"
  mount "$l" "$work/mnt-${dev[$n]}"
  mkdir -p "$work/mnt-${dev[$n]}/data"
done
for n in "${names[@]}"; do
  "${bin[$n]}" --mqtt-url mqtt://127.0.0.1:$mqtt --mo 1.2.643.5.1.13.13.12.2.27.9999 \
    --role workstation --site bench --host-id "disk-$n" \
    --data-dir "$work/mnt-${dev[$n]}/data" --interval-secs "$INTERVAL" \
    --probe lis=tcp://127.0.0.1:$http >"$work/$n.log" 2>&1 & apid[$n]=$!; pids+=($!)
done

# dev → "write_ios write_kib flushes jbd2_transactions fs_write_kib"
snap() {
  local d=$1 s t k
  s=$(cat /sys/block/$d/stat)
  t=$(head -1 /proc/fs/jbd2/$d-8/info | awk '{print $1}')
  k=$(cat /sys/fs/ext4/$d/session_write_kbytes)
  awk -v t="$t" -v k="$k" '{print $5, $7/2, (NF>=16 ? $16 : "n/a"), t, k}' <<<"$s"
}
sleep "$WARMUP"
declare -A before after stopped
for n in "${names[@]}"; do before[$n]=$(snap "${dev[$n]}"); done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
sleep "$SECONDS_RUN"
t1=$(date +%s)
for n in "${names[@]}"; do after[$n]=$(snap "${dev[$n]}"); done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
for n in "${names[@]}"; do kill -TERM "${apid[$n]}"; done
for n in "${names[@]}"; do wait "${apid[$n]}" 2>/dev/null || true; done
sleep 40 # the stop's writeback
for n in "${names[@]}"; do sync -f "$work/mnt-${dev[$n]}/data" 2>/dev/null || true; stopped[$n]=$(snap "${dev[$n]}"); done

win=$((t1 - t0))
beats=$(awk -v w=$win -v i="$INTERVAL" 'BEGIN{printf "%.1f", w/i}')
echo "window ${win} s at a ${INTERVAL} s interval (${beats} heartbeats per agent); load average at start ${load0}, at end ${load1}"
for n in "${names[@]}"; do
  echo "$n: $(grep -c -i 'connected' "$work/$n.log" || true) 'connected' log lines, last: $(grep -i 'connect' "$work/$n.log" | tail -1 | cut -c1-160)"
done
printf '%-10s %-6s | %9s %9s %8s %6s %9s | %10s %10s %10s %10s | %s\n' peer dev writes KiB flushes jbd2 fs_KiB \
  writes/h KiB/h flushes/h jbd2/h "stop: writes KiB flushes jbd2"
for n in "${names[@]}"; do
  read -r w0 k0 f0 j0 s0 <<<"${before[$n]}"
  read -r w1 k1 f1 j1 s1 <<<"${after[$n]}"
  read -r w2 k2 f2 j2 s2 <<<"${stopped[$n]}"
  awk -v n="$n" -v d="${dev[$n]}" -v win="$win" \
    -v w=$((w1 - w0)) -v k="$(awk -v a="$k1" -v b="$k0" 'BEGIN{print a-b}')" \
    -v f="$( [ "$f1" = n/a ] && echo n/a || echo $((f1 - f0)))" -v j=$((j1 - j0)) -v s=$((s1 - s0)) \
    -v sw=$((w2 - w1)) -v sk="$(awk -v a="$k2" -v b="$k1" 'BEGIN{print a-b}')" \
    -v sf="$( [ "$f2" = n/a ] && echo n/a || echo $((f2 - f1)))" -v sj=$((j2 - j1)) 'BEGIN{
      h=3600/win
      printf "%-10s %-6s | %9d %9.1f %8s %6d %9d | %10.1f %10.1f %10s %10.1f | %d %.1f %s %d\n",
        n, d, w, k, f, j, s, w*h, k*h, (f=="n/a" ? "n/a" : sprintf("%.1f", f*h)), j*h, sw, sk, sf, sj }'
done
for n in "${names[@]}"; do
  echo "--- $n: files in its data dir"; ls -l --time-style=+%T "$work/mnt-${dev[$n]}/data"
done
