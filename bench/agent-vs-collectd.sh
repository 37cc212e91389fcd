#!/usr/bin/env bash
# dozor-agent and collectd side by side, in the same run, on the same box, at the same interval
# (default 30 s), each in its own cpuacct cgroup and under strace (seccomp-bpf: only the
# sync calls stop the tracee). Prints one table: RSS and PSS (avg/max, /proc/PID/status and
# smaps_rollup), CPU (cgroup, ns) per hour and per round, bytes written to the block layer
# (/proc/PID/io write_bytes) per hour, and flushes (fsync + fdatasync + sync_file_range +
# msync) per hour. Counting starts after a warm-up of one interval plus 10 s.
#
# dozor-agent: release-agent build, three probes (HTTP, TCP, DNS) against local servers,
# publishing to a collector with its embedded broker (a debug build: only the broker matters).
# collectd 5.12 (Debian collectd-core, installed here): cpu, memory, load, df, uptime, the
# curl plugin fetching the same local HTTP page (collectd has no TCP or DNS probe without
# forking a script), the network plugin sending to UDP 127.0.0.1:25826; and `collectd-min`, the
# same without the curl plugin.
#
# Usage: bench/agent-vs-collectd.sh [DURATION_SECS=600] [INTERVAL_SECS=30]
# Env: FLUSH_AFTER_SECS (agent spool.flush_after_secs, default the agent's), SYNCHRONOUS;
# PERF=1 then profiles two more rounds of each peer with perf (stat: task clock, context
# switches, page faults; record: CPU by shared object, and by symbol where there are symbols).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
INTERVAL=${2:-30}
export PATH=$PATH:/usr/sbin
TARGET=${CARGO_TARGET_DIR:-target}
PROFILE=${AGENT_PROFILE:-release-agent}
if ! command -v collectd >/dev/null || ! command -v strace >/dev/null; then
  echo "+ apt-get install -y collectd-core strace"
  apt-get install -y --no-install-recommends collectd-core strace >/dev/null
fi
echo "+ cargo build --profile $PROFILE -p dozor-agent && cargo build -p dozor-collector"
cargo build --profile "$PROFILE" -p dozor-agent >/dev/null 2>&1
cargo build -p dozor-collector >/dev/null 2>&1
AGENT="$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/dozor-agent"
# On a real disk, not tmpfs: write_bytes counts what reaches the block layer.
work=$(mktemp -d -p /var/tmp dozor-diet.XXXXXX)
CG=/sys/fs/cgroup/cpuacct
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for g in agent collectd collectd-min; do rmdir "$CG/dozor-bench-$$-$g" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
use_cg=1
for g in agent collectd collectd-min; do mkdir -p "$CG/dozor-bench-$$-$g" 2>/dev/null || use_cg=0; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port); http=$(free_port); mis=$(free_port); lis=$(free_port)
# Open mode: the bench agent is not enrolled (signing costs are in docs/benchmarks.md, Security).
token=$("$TARGET/debug/dozor-collector" --data-dir "$work/c" api-token create --name bench --role admin 2>/dev/null | tail -1)
"$TARGET/debug/dozor-collector" --security-mode open --mqtt-listen 127.0.0.1:$mqtt \
  --http-listen 127.0.0.1:$http --data-dir "$work/c" >/dev/null 2>&1 & pids+=($!)
(cd "$work" && exec python3 -m http.server $mis --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
python3 -c "
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$lis)); s.listen(64)
while True:
    c,_=s.accept(); c.close()" & pids+=($!)
mkdir -p "$work/cd"
cat >"$work/collectd.conf" <<EOF
Hostname "bench"
FQDNLookup false
Interval $INTERVAL
BaseDir "$work/cd"
PIDFile "$work/cd/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin df
LoadPlugin uptime
LoadPlugin curl
LoadPlugin network
<Plugin df>
  MountPoint "/"
</Plugin>
<Plugin curl>
  <Page "mis">
    URL "http://127.0.0.1:$mis/"
    MeasureResponseTime true
  </Page>
</Plugin>
<Plugin network>
  Server "127.0.0.1" "25826"
</Plugin>
EOF
# The same without the curl plugin (and so without libcurl and its TLS libraries): the figure
# issue 15 compared against.
grep -v -e 'LoadPlugin curl' "$work/collectd.conf" | python3 -c '
import re,sys; t=sys.stdin.read(); print(re.sub(r"<Plugin curl>.*?</Plugin>\n", "", t, flags=re.S).replace("collectd.pid", "collectd-min.pid"))' >"$work/collectd-min.conf"
sleep 2
SYNCS=fsync,fdatasync,sync_file_range,msync
# Each peer: strace → sh (joins its cgroup, writes its pid) → exec the peer.
launch() { # name, command...
  local name=$1; shift
  local cg=""
  [ "$use_cg" = 1 ] && cg="$CG/dozor-bench-$$-$name/cgroup.procs"
  strace -f --seccomp-bpf -e trace=$SYNCS -o "$work/$name.strace" \
    sh -c 'echo $$ > "$0.pid"; [ -n "$1" ] && echo $$ > "$1"; shift 2; exec "$@"' \
    "$work/$name" "$cg" -- "$@" >/dev/null 2>&1 &
  pids+=($!)
}
agent_args=(--mqtt-url mqtt://127.0.0.1:$mqtt --mo 1.2.643.5.1.13.13.12.2.27.9999
  --role workstation --site bench --data-dir "$work/a" --interval-secs "$INTERVAL"
  --probe-interval-secs "$INTERVAL"
  --probe mis=http://127.0.0.1:$mis/ --probe lis=tcp://127.0.0.1:$lis --probe pacs=dns://localhost)
[ -n "${FLUSH_AFTER_SECS:-}" ] && agent_args+=(--spool-flush-after-secs "$FLUSH_AFTER_SECS")
[ -n "${SYNCHRONOUS:-}" ] && agent_args+=(--spool-synchronous "$SYNCHRONOUS")
launch agent "$AGENT" "${agent_args[@]}"
launch collectd collectd -f -C "$work/collectd.conf"
launch collectd-min collectd -f -C "$work/collectd-min.conf"
sleep 2
PEERS=(agent collectd collectd-min)
declare -A pid_of
for n in "${PEERS[@]}"; do
  pid_of[$n]=$(cat "$work/$n.pid"); kill -0 "${pid_of[$n]}"; pids+=("${pid_of[$n]}")
done
# Warm-up: the first round, the first counter block, the spool opening.
sleep $((INTERVAL + 10))

cpu_ns() { # name pid
  if [ "$use_cg" = 1 ]; then cat "$CG/dozor-bench-$$-$1/cpuacct.usage"
  else awk -v t="$(getconf CLK_TCK)" '{printf "%d\n", ($14+$15)*1e9/t}' /proc/$2/stat; fi
}
wbytes() { awk '/^write_bytes/{print $2}' /proc/$1/io; }
syncs() { grep -cE "(fsync|fdatasync|sync_file_range|msync)\(" "$work/$1.strace" || true; }
declare -A c0 w0 s0 rsum rmax psum pmax
for n in "${PEERS[@]}"; do
  pid=${pid_of[$n]}
  c0[$n]=$(cpu_ns $n "$pid"); w0[$n]=$(wbytes "$pid"); s0[$n]=$(syncs $n)
  rsum[$n]=0; rmax[$n]=0; psum[$n]=0; pmax[$n]=0
done
t0=$(date +%s.%N); samples=0
end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$end" ]; do
  for n in "${PEERS[@]}"; do
    pid=${pid_of[$n]}
    r=$(awk '/^VmRSS/{print $2}' /proc/$pid/status)
    p=$(awk '/^Pss:/{print $2}' /proc/$pid/smaps_rollup)
    rsum[$n]=$((rsum[$n] + r)); psum[$n]=$((psum[$n] + p))
    [ "$r" -gt "${rmax[$n]}" ] && rmax[$n]=$r
    [ "$p" -gt "${pmax[$n]}" ] && pmax[$n]=$p
  done
  samples=$((samples + 1))
  sleep 5
done
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc -l)
rounds=$(echo "$secs / $INTERVAL" | bc -l)
state=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$http/api/v1/hosts" | python3 -c 'import json,sys; h=json.load(sys.stdin)[0]; print(h["state"], {k:v["ok"] for k,v in h["probes"].items()})' 2>/dev/null || echo "?")
printf 'duration_s=%.0f interval_s=%s rounds=%.1f cpu_source=%s agent_profile=%s\n' "$secs" "$INTERVAL" "$rounds" \
  "$([ "$use_cg" = 1 ] && echo cgroup-cpuacct || echo proc-stat-ticks)" "$PROFILE"
printf '%-12s %9s %9s %9s %9s %12s %12s %14s %12s\n' peer rss_avg_kb rss_max_kb pss_avg_kb pss_max_kb \
  cpu_ms_hour cpu_ms_round written_kib_hour flushes_hour
for n in "${PEERS[@]}"; do
  pid=${pid_of[$n]}
  c=$(( $(cpu_ns $n "$pid") - c0[$n] )); w=$(( $(wbytes "$pid") - w0[$n] )); s=$(( $(syncs $n) - s0[$n] ))
  printf '%-12s %9d %9d %9d %9d %12.1f %12.3f %14.1f %12.1f\n' \
    "$([ $n = agent ] && echo dozor-agent || echo "$n")" \
    $((rsum[$n] / samples)) "${rmax[$n]}" $((psum[$n] / samples)) "${pmax[$n]}" \
    "$(echo "$c / 1000000 * 3600 / $secs" | bc -l)" "$(echo "$c / 1000000 / $rounds" | bc -l)" \
    "$(echo "$w / 1024 * 3600 / $secs" | bc -l)" "$(echo "$s * 3600 / $secs" | bc -l)"
done
echo "agent's host at the end: $state"
echo "agent's spool file: $(ls -l "$work/a/" | awk 'NR>1{printf "%s=%s ", $9, $5}')"
if [ "${PERF:-0}" = 1 ]; then
  # After the measured window (perf's sampling would tax what it measures): two rounds, all
  # peers at once.
  command -v perf >/dev/null || apt-get install -y --no-install-recommends linux-perf >/dev/null
  ppids=()
  for n in "${PEERS[@]}"; do
    perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "${pid_of[$n]}" \
      -o "$work/$n.stat" -- sleep $((2 * INTERVAL)) >/dev/null 2>&1 & ppids+=($!)
    perf record -q -F 9999 -g -p "${pid_of[$n]}" -o "$work/$n.perf" \
      -- sleep $((2 * INTERVAL)) >/dev/null 2>&1 & ppids+=($!)
  done
  wait "${ppids[@]}" || true
  for n in "${PEERS[@]}"; do
    echo "--- perf, $n, $((2 * INTERVAL)) s (2 rounds)"
    grep -E 'task-clock|context|migrations|faults' "$work/$n.stat" || true
    perf report -q -i "$work/$n.perf" --stdio --no-children --sort dso -g none 2>/dev/null | grep -E '^ +[0-9]' | head -8
    perf report -q -i "$work/$n.perf" --stdio --no-children --sort dso,sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -12
  done
fi
