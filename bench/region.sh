#!/usr/bin/env bash
# A region in a box (issue 15; see docs/benchmarks.md, "A region's day").
#
# Starts Mosquitto and a release dozor-collector on it, then runs `dozor-loadgen --scenario day`:
# HOSTS simulated agents in MO_COUNT МО switch on over RAMP_SECS (30 s = 08:00–08:15 at the
# scenario clock factor 30), the hosts of one МО replay a backlog of BACKLOG heartbeats each
# (20,160 = 7 days at 30 s; as fast as the broker takes them, not at the agent's 5 msg/s
# pacing), the report over that week is read back; at noon one server's agent is killed (never
# back: the day's one implied incident); over lunch LUNCH_OFF_PCT of the workstations are
# switched off (13:00–13:15) and on again (14:00–14:15); then every workstation shuts down over
# RAMP_SECS. Printed per phase: time to drain the storm, the collector's CPU peak (1 s windows)
# and average and its RSS peak, whether any replaying host read anything but online, the
# report's down time for the replayed hosts (expected 0), the time from the kill to its
# incident, the incidents opened (expected exactly the killed server's) and today's report
# (down time for the killed server only). Exits non-zero when a check fails.
#
# SCENARIO=restart instead runs a collector with its embedded broker (the default deployment)
# and AGENTS simulated agents, each with its own MQTT connection and client id, reconnecting
# with the real agent's backoff; once all are online the collector is restarted
# (RESTART_SIGNAL, default TERM; KILL for a crash) and the time until every agent is connected
# and online again is printed, with the connection attempts and refusals, the gate's refusals,
# CPU/RSS peaks, and the incidents opened (expected none). The agents' connections are dealt
# over ADDRS loopback addresses (one source address reaches ~28,000 ports of one destination).
# Collectors before the in-process pipe to rumqttd also opened one loopback connection per
# agent from 127.0.0.1 to rumqttd's port, so above ~28,000 agents the ephemeral port range is
# still widened for the run (PORT_RANGE, restored on exit; needs root). The collector needs 1
# open file per agent (3 before the pipe): the script refuses an AGENTS the hard limit
# (`ulimit -Hn`) cannot hold.
#
# Environment: HOSTS (7000), MO_COUNT (100), BACKLOG (20160), RAMP_SECS (30), CONNECTIONS (8),
# LUNCH_OFF_PCT (25), NOON_KILL (true), REPLAY_RATE (0: as fast as the broker takes; msg/s over
# all replaying hosts, a real agent's pace is 5 msg/s each), KEEPALIVE_SECS (30: the collector's mqtt.keepalive_secs),
# MOSQ_INFLIGHT (20000: Mosquitto's max_inflight_messages), TIMEOUT_SECS (600), CARGO_TARGET_DIR (./target),
# REPLAY_TOPICS (1: the backlog goes on the replay topics, `…/hb-replay`, as agents since the replay
# topics send it; 0: on the live topics, as older agents do and a collector before them needs),
# REPLAY_SESSION (unset: the collector's default; true/false sets mqtt.replay_session),
# COLLECTOR (the collector binary; default the built one: a copy of an older build to compare),
# BUILD (1; 0 to use the binaries built), PROFILE (release; debug for a smoke run with BUILD=0).
# SCENARIO=restart: AGENTS (30000), MO_COUNT (300), RAMP_SECS (120), ADDRS (4),
# MAX_CONNECTIONS (AGENTS + 10 %; the default mqtt.max_connections, 20,000, is below a
# 30,000-host region), RESTART_SIGNAL (TERM), SETTLE_SECS (120), PORT_RANGE ("10240 65535").
# Everything but the restart scenario's broker listens on 127.0.0.1; every process started
# here is killed on exit.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
source bench/lib/collector-ctl.sh
SCENARIO=${SCENARIO:-day}
HOSTS=${HOSTS:-7000}
if [[ $SCENARIO == restart ]]; then
    MO_COUNT=${MO_COUNT:-300}
    RAMP_SECS=${RAMP_SECS:-120}
fi
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
COLLECTOR=${COLLECTOR:-$BIN/dozor-collector}
[[ -x $COLLECTOR ]] || { echo "$COLLECTOR is not executable" >&2; exit 1; }
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
    # A restarted collector is not a job of this shell.
    [[ -f $WORK/collector.pid ]] && kill -KILL "$(cat "$WORK/collector.pid")" 2>/dev/null || true
    [[ -z ${OLD_RANGE:-} ]] || echo "$OLD_RANGE" >/proc/sys/net/ipv4/ip_local_port_range || true
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

if [[ $SCENARIO == restart ]]; then
    AGENTS=${AGENTS:-30000}
    ADDRS=${ADDRS:-4}
    # The collector holds one descriptor per agent (its socket at the gate; the gate reaches
    # rumqttd through an in-memory pipe), the load generator one.
    ulimit -n "$(ulimit -Hn)"
    need=$((AGENTS + 1024))
    if (($(ulimit -n) < need)); then
        echo "AGENTS=$AGENTS needs $need open files in the collector; the hard limit here is $(ulimit -Hn) (raising it needs CAP_SYS_RESOURCE): at most $(($(ulimit -Hn) - 1024)) agents" >&2
        exit 1
    fi
    if ((AGENTS > 28000)); then
        OLD_RANGE=$(cat /proc/sys/net/ipv4/ip_local_port_range)
        echo "${PORT_RANGE:-10240 65535}" >/proc/sys/net/ipv4/ip_local_port_range ||
            { OLD_RANGE=; echo "cannot widen net.ipv4.ip_local_port_range (needs root)" >&2; exit 1; }
        echo "# ephemeral ports widened for the run: $OLD_RANGE -> $(cat /proc/sys/net/ipv4/ip_local_port_range)" >&2
    fi
    MQTT_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    cat >"$WORK/collector.toml" <<EOF
[mqtt]
listen = "0.0.0.0:$MQTT_PORT"
max_connections = ${MAX_CONNECTIONS:-$((AGENTS + AGENTS / 10))}
[security]
mode = "open"
EOF
    mkdir -p "$WORK/data"
    # start.sh (prints the collector's PID once it listens) and restart.sh (RESTART_SIGNAL).
    write_collector_ctl "$COLLECTOR" "$HTTP_PORT" warn "${RESTART_SIGNAL:-TERM}"
    COLL_PID=$(bash "$WORK/start.sh")
    addrs=127.0.0.1
    for i in $(seq 2 "$ADDRS"); do addrs+=",127.0.0.$i"; done
    echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); SCENARIO=restart AGENTS=$AGENTS MO_COUNT=$MO_COUNT RAMP_SECS=$RAMP_SECS ADDRS=$ADDRS RESTART_SIGNAL=${RESTART_SIGNAL:-TERM}; open files $(ulimit -n)"
    set +e
    "$BIN/dozor-loadgen" --scenario restart --mqtt-url "mqtt://127.0.0.1:$MQTT_PORT" \
        --mqtt-hosts "$addrs" --api-url "http://127.0.0.1:$HTTP_PORT" --collector-pid "$COLL_PID" \
        --hosts "$AGENTS" --mo-count "$MO_COUNT" --ramp-secs "$RAMP_SECS" \
        --restart-cmd "bash $WORK/restart.sh" --settle-secs "${SETTLE_SECS:-120}" \
        --timeout-secs "$TIMEOUT_SECS" --threads 2
    rc=$?
    set -e
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg); collector VmHWM $(awk '/^VmHWM/ {print $2, $3}' "/proc/$(cat "$WORK/collector.pid")/status"); warnings in its log: $(grep -c WARN "$WORK/collector.stderr" || true)"
    grep -E 'WARN|ERROR' "$WORK/collector.stderr" | cut -c1-300 | sort | uniq -c | sort -rn | head -8 || true
    exit $rc
fi

MOSQ_PORT=$(free_port)
mkdir -p "$WORK/mosquitto"
# Queues sized for the collector's persistent session during a storm; no persistence.
cat >"$WORK/mosquitto/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages ${MOSQ_INFLIGHT:-20000}
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
[mqtt]
keepalive_secs = ${KEEPALIVE_SECS:-30}
${REPLAY_SESSION:+replay_session = $REPLAY_SESSION}
[limits]
max_msgs_per_host_per_min = 1000000
[security]
mode = "open"
EOF
mkdir -p "$WORK/data"
DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=warn "$COLLECTOR" --config "$WORK/collector.toml" \
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

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); HOSTS=$HOSTS MO_COUNT=$MO_COUNT BACKLOG=$BACKLOG RAMP_SECS=$RAMP_SECS REPLAY_TOPICS=${REPLAY_TOPICS:-1} REPLAY_SESSION=${REPLAY_SESSION:-default} COLLECTOR=$COLLECTOR"
set +e
"$BIN/dozor-loadgen" --scenario day --mqtt-url "mqtt://127.0.0.1:$MOSQ_PORT" \
    --api-url "http://$COLL_HTTP" --collector-pid "$COLL_PID" --hosts "$HOSTS" \
    --mo-count "$MO_COUNT" --backlog "$BACKLOG" --ramp-secs "$RAMP_SECS" \
    --connections "$CONNECTIONS" --timeout-secs "$TIMEOUT_SECS" \
    --lunch-off-pct "${LUNCH_OFF_PCT:-25}" --noon-kill "${NOON_KILL:-true}" \
    --replay-rate "${REPLAY_RATE:-0}" --replay-topics "$([[ ${REPLAY_TOPICS:-1} == 0 ]] && echo false || echo true)"
rc=$?
set -e
metrics=$(curl -s "http://$COLL_HTTP/metrics" || true)
metric() { awk -v n="$1" '$1 == n {print $2}' <<<"$metrics"; }
echo "# collector MQTT reconnects $(metric dozor_mqtt_reconnects_total), duplicates $(metric dozor_messages_duplicate_total), received $(metric dozor_messages_received_total), ingest queue peak $(metric dozor_ingest_queue_peak_messages) messages"
echo "# load $(cut -d' ' -f1-3 /proc/loadavg); collector VmHWM $(awk '/^VmHWM/ {print $2, $3}' /proc/$COLL_PID/status); warnings in its log: $(grep -c WARN "$WORK/collector.stderr" || true)"
grep -m5 -E 'WARN|ERROR' "$WORK/collector.stderr" || true
exit $rc
