#!/usr/bin/env bash
# Measures the agent's footprint: RSS and CPU over DURATION seconds (default 600) at the
# default interval (30 s) with three probes (HTTP, TCP, DNS) against local servers, plus the
# stripped size of the release binary. Usage: bench/agent-footprint.sh [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
TARGET=${CARGO_TARGET_DIR:-target}
PROFILE=${AGENT_PROFILE:-release}
# The collector only serves as the broker here: a debug build is enough.
echo "+ cargo build --profile $PROFILE -p dozor-agent && cargo build -p dozor-collector"
cargo build --profile "$PROFILE" -p dozor-agent >/dev/null 2>&1
cargo build -p dozor-collector >/dev/null 2>&1
AGENT="$TARGET/$PROFILE/dozor-agent"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port); http=$(free_port); mis=$(free_port); lis=$(free_port)
DOZOR_HTTP_PUBLIC_READ=true "$TARGET/debug/dozor-collector" --mqtt-listen 127.0.0.1:$mqtt --http-listen 127.0.0.1:$http --data-dir "$work/c" >/dev/null 2>&1 & pids+=($!)
(cd "$work" && python3 -m http.server $mis --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
python3 -c "
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$lis)); s.listen(64)
while True:
    c,_=s.accept(); c.close()" & pids+=($!)
sleep 2
"$AGENT" --mqtt-url mqtt://127.0.0.1:$mqtt --mo 1.2.643.5.1.13.13.12.2.27.9999 \
  --role workstation --site bench --data-dir "$work/a" \
  --probe mis=http://127.0.0.1:$mis/ --probe lis=tcp://127.0.0.1:$lis --probe pacs=dns://localhost >/dev/null 2>&1 &
agent=$!; pids+=($agent)
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$agent/stat; }
sleep 5
c0=$(cpu); t0=$(date +%s.%N); max=0; sum=0; n=0
end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$end" ]; do
  rss=$(awk '/VmRSS/{print $2}' /proc/$agent/status)
  [ "$rss" -gt "$max" ] && max=$rss
  sum=$((sum + rss)); n=$((n + 1))
  sleep 10
done
c1=$(cpu); t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/{print $2}' /proc/$agent/status)
secs=$(echo "$t1 - $t0" | bc -l)
cpus=$(echo "($c1 - $c0) / $tck" | bc -l)
state=$(curl -s "http://127.0.0.1:$http/api/v1/hosts" | python3 -c 'import json,sys; h=json.load(sys.stdin)[0]; print(h["state"], {k:v["ok"] for k,v in h["probes"].items()})')
cp "$AGENT" "$work/agent-stripped" && strip "$work/agent-stripped"
printf 'profile=%s duration_s=%.0f interval=30s probes=3 (http,tcp,dns)\n' "$PROFILE" "$secs"
printf 'rss_avg_kb=%d rss_max_kb=%d vmhwm_kb=%d\n' $((sum / n)) "$max" "$hwm"
printf 'cpu_s=%.3f cpu_pct=%.4f\n' "$cpus" "$(echo "100 * $cpus / $secs" | bc -l)"
printf 'binary_bytes=%d stripped_bytes=%d\n' "$(stat -c %s "$AGENT")" "$(stat -c %s "$work/agent-stripped")"
echo "host at the end: $state"
