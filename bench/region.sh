#!/usr/bin/env bash
# A region in a box (issue 15; see docs/benchmarks.md, "A region's day").
#
# Starts Mosquitto and a release dozor-collector on it, then runs `dozor-loadgen --scenario day`:
# HOSTS simulated agents in MO_COUNT МО switch on over RAMP_SECS (30 s = 08:00–08:15 at the
# scenario clock factor 30), the hosts of one МО replay a backlog of BACKLOG heartbeats each
# (20,160 = 7 days at 30 s; as fast as the broker takes them, not at the agent's 5 msg/s
# pacing), the report over that week is read back, then every workstation shuts down over
# RAMP_SECS. Printed per phase: time to drain the storm, the collector's CPU peak (1 s windows)
# and average and its RSS peak, whether any replaying host read anything but online, the
# report's down time for the replayed hosts (expected 0), and the incidents opened (expected 0).
#
# Environment: HOSTS (7000), MO_COUNT (100), BACKLOG (20160), RAMP_SECS (30), CONNECTIONS (8),
# TIMEOUT_SECS (600), CARGO_TARGET_DIR (./target), BUILD (1; 0 to use the binaries built),
# PROFILE (release; debug for a smoke run with BUILD=0).
# Everything listens on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-7000}
MO_COUNT=${MO_COUNT:-100}
BACKLOG=${BACKLOG:-20160}
RAMP_SECS=${RAMP_SECS:-30}
CONNECTIONS=${CONNECTIONS:-8}
TIMEOUT_SECS=${TIMEOUT_SECS:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BUILD=${BUILD:-1}

if [[ $BUILD == 1 ]]; then
    echo "+ cargo build --release -p dozor-collector -p dozor-tests --bin dozor-loadgen" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests --bin dozor-loadgen
fi
BIN=$TARGET_DIR/${PROFILE:-release}
for b in dozor-collector dozor-loadgen; do
    [[ -x $BIN/$b ]] || { echo "$BIN/$b not built" >&2; exit 1; }
done
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
for b in mosquitto curl; do
    command -v "$b" >/dev/null || { echo "$b is required" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/dozor-region.XXXXXX)
cleanup() {
    local pids
    pids=$(jobs -p)
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    wait 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

MOSQ_PORT=$(free_port)
mkdir -p "$WORK/mosquitto"
# Queues sized for the collector's persistent session during a storm; no persistence.
cat >"$WORK/mosquitto/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20000
max_queued_messages 0
log_dest stderr
log_type error
log_type warning
EOF
mosquitto -c "$WORK/mosquitto/mosquitto.conf" 2>"$WORK/mosquitto/log" &
MOSQ_PID=$!
wait_port "$MOSQ_PORT"

# The simulated agents publish unsigned for many hosts per connection (open mode) and replay
# far faster than an agent's 5 msg/s (the flood limit is raised); every other option is the
# default. The API is read without a token.
cat >"$WORK/collector.toml" <<EOF
[limits]
max_msgs_per_host_per_min = 1000000
[security]
mode = "open"
EOF
mkdir -p "$WORK/data"
DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=warn "$BIN/dozor-collector" --config "$WORK/collector.toml" \
    --data-dir "$WORK/data" --http-listen 127.0.0.1:0 --mqtt-url "mqtt://127.0.0.1:$MOSQ_PORT" \
    >"$WORK/collector.stdout" 2>"$WORK/collector.stderr" &
COLL_PID=$!
line=
for _ in $(seq 600); do
    line=$(grep -m1 '^dozor-collector listening' "$WORK/collector.stdout" 2>/dev/null || true)
    [[ -n $line ]] && break
    kill -0 "$COLL_PID" 2>/dev/null || { cat "$WORK/collector.stderr" >&2; exit 1; }
    sleep 0.05
done
[[ -n $line ]] || { echo "collector did not start" >&2; exit 1; }
COLL_HTTP=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$line")

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); HOSTS=$HOSTS MO_COUNT=$MO_COUNT BACKLOG=$BACKLOG RAMP_SECS=$RAMP_SECS"
set +e
"$BIN/dozor-loadgen" --scenario day --mqtt-url "mqtt://127.0.0.1:$MOSQ_PORT" \
    --api-url "http://$COLL_HTTP" --collector-pid "$COLL_PID" --hosts "$HOSTS" \
    --mo-count "$MO_COUNT" --backlog "$BACKLOG" --ramp-secs "$RAMP_SECS" \
    --connections "$CONNECTIONS" --timeout-secs "$TIMEOUT_SECS"
rc=$?
set -e
metrics=$(curl -s "http://$COLL_HTTP/metrics" || true)
metric() { awk -v n="$1" '$1 == n {print $2}' <<<"$metrics"; }
echo "# collector MQTT reconnects $(metric dozor_mqtt_reconnects_total), duplicates $(metric dozor_messages_duplicate_total), received $(metric dozor_messages_received_total), ingest queue peak $(metric dozor_ingest_queue_peak_messages) messages"
echo "# collector VmHWM $(awk '/^VmHWM/ {print $2, $3}' /proc/$COLL_PID/status); warnings in its log: $(grep -c WARN "$WORK/collector.stderr" || true)"
grep -m5 -E 'WARN|ERROR' "$WORK/collector.stderr" || true
exit $rc
