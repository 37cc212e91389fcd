#!/usr/bin/env bash
# A Mosquitto bridge tree with AGENTS enrolled agents (issue 15; docs/scaling.md, docs/benchmarks.md
# "A Mosquitto bridge tree").
#
# EDGES edge Mosquittos each hold the connections of the agents of their МО (one descriptor per
# agent per process: 15,000 agents an edge fits the 20,000 open files a process may hold here,
# where the embedded broker's 3 per agent stopped at 6,000; 1 per agent since its in-process
# pipe). Each edge bridges the agents'
# upstream topics to a core Mosquitto at QoS 1 and the collector's `ack`/`cfg` back; the
# collector subscribes to the core with its persistent session. Security as a region runs it
# (deploy/mosquitto-secure.conf, docs/security.md) but without TLS: every broker runs the
# dynamic-security plugin, no anonymous clients; the collector is in enrolled mode (every message
# signed by a registered identity). Agents log in at the edges only, so the core holds just the
# collector's and the bridges' logins (the collector's role is what `identity::dynsec` gives it;
# `mqtt.dynsec` is off: its commands would copy 30,000 agents into a broker they never use).
# `dozor-loadgen --scenario provision` enrolls the fleet into the collector's identity.db and
# writes each edge's dynsec file before the edge starts: the same clients and roles the
# collector's commands make, password hashes as the plugin makes them. PROVISION=commands sends
# the collector's commands to the running edges instead: Mosquitto 2.0.11 rewrites its whole
# dynsec file after every command, so that path is quadratic (docs/benchmarks.md has the figure).
# Every agent logs in with its own identity, signs its messages and
# leaves a signed last will; the agents run in EDGES `dozor-loadgen --scenario agents` processes
# (one per edge, so none exceeds the open-files limit).
#
# Printed (from `dozor-loadgen --scenario bridge`, loadgen/bridge.rs): provisioning times; the
# time until every agent is connected and online; steady-state CPU/RSS of the collector, each
# broker and each agents process; a graceful and a `kill -9` collector restart: the time until
# every message the edges had acknowledged is stored, incidents (expected 0); an edge restart
# (its agents reconnect with the real backoff): the time until all are connected, online and
# stored, the fewest online, CPU/RSS peaks, the incidents' texts; at the end the messages lost
# (acknowledged by an edge, never stored; expected 0), duplicates and rejections. Exits non-zero
# when a check fails.
#
# Environment: AGENTS (30000), EDGES (2), MO_COUNT (300), RAMP_SECS (120), STEADY_SECS (60),
# SETTLE_SECS (90), BRIDGE_INFLIGHT (1000: the
# edges' max_inflight_messages, which is also the bridge's window towards the core),
# CORE_INFLIGHT (20000), EDGE_STOP (TERM: how edge 1 is stopped; KILL for a crash),
# PROVISION (file; commands),
# TIMEOUT_SECS (900), BUILD (1; 0 to use the binaries built), PROFILE (release), KEEP (0).
# Every process started here is killed on exit.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
source bench/lib/collector-ctl.sh
AGENTS=${AGENTS:-30000}
EDGES=${EDGES:-2}
MO_COUNT=${MO_COUNT:-300}
RAMP_SECS=${RAMP_SECS:-120}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [[ ${BUILD:-1} == 1 ]]; then
    echo "+ cargo build --release -p dozor-collector -p dozor-tests --bin dozor-loadgen" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests --bin dozor-loadgen
fi
BIN=$TARGET_DIR/${PROFILE:-release}
for b in dozor-collector dozor-loadgen; do
    [[ -x $BIN/$b ]] || { echo "$BIN/$b not built" >&2; exit 1; }
done
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
for b in mosquitto mosquitto_ctrl curl; do
    command -v "$b" >/dev/null || { echo "$b is required" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
per_edge=$(((AGENTS + EDGES - 1) / EDGES))
if ((per_edge + 512 > $(ulimit -n))); then
    echo "$per_edge agents per edge need $((per_edge + 512)) open files per process; the limit here is $(ulimit -n): raise EDGES" >&2
    exit 1
fi
if ((MO_COUNT % EDGES != 0)); then
    echo "MO_COUNT ($MO_COUNT) must be a multiple of EDGES ($EDGES): each edge holds whole МО" >&2
    exit 1
fi

WORK=$(mktemp -d /var/tmp/dozor-bridge.XXXXXX)
cleanup() {
    local p
    for p in "$WORK"/*.pid; do
        [[ -f $p ]] && kill -KILL "$(cat "$p")" 2>/dev/null || true
    done
    p=$(jobs -p)
    [[ -z $p ]] || kill -KILL $p 2>/dev/null || true
    wait 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
secs() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }

ADMIN_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
BRIDGE_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
CORE_PORT=$(free_port)
HTTP_PORT=$(free_port)
EDGE_PORTS=()
for e in $(seq "$EDGES"); do EDGE_PORTS+=("$(free_port)"); done
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(load); AGENTS=$AGENTS EDGES=$EDGES MO_COUNT=$MO_COUNT RAMP_SECS=$RAMP_SECS BRIDGE_INFLIGHT=${BRIDGE_INFLIGHT:-1000} EDGE_STOP=${EDGE_STOP:-TERM}; open files per process $(ulimit -n)"

# Starts broker $1 (core, edge1, …) from $WORK/$1/mosquitto.conf in its own session; prints its PID.
cat >"$WORK/broker.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
ulimit -n \$(ulimit -Hn)
setsid mosquitto -c "$WORK/\$1/mosquitto.conf" >/dev/null 2>>"$WORK/\$1/log" </dev/null &
echo \$! >"$WORK/\$1.pid"
echo \$!
EOF

# Brokers: dynamic security everywhere, the admin "dozor-collector" on the core (the collector's
# login), "edge-admin" on the edges.
mkdir -p "$WORK/core"
mosquitto_ctrl dynsec init "$WORK/core/dynsec.json" dozor-collector "$ADMIN_PASS" >/dev/null
cat >"$WORK/core/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $WORK/core/dynsec.json
listener $CORE_PORT 127.0.0.1
max_connections 1000
# The collector's window (deploy/mosquitto.conf) and its persistent session's queue while it
# restarts; the same queue holds acks for a bridge whose edge is down.
max_inflight_messages ${CORE_INFLIGHT:-20000}
max_queued_messages 1000000
max_queued_bytes 536870912
max_packet_size 65536
persistence true
persistence_location $WORK/core/
autosave_interval 60
log_dest stderr
log_type error
log_type warning
EOF
for e in $(seq "$EDGES"); do
    d=$WORK/edge$e
    mkdir -p "$d"
    mosquitto_ctrl dynsec init "$d/dynsec.json" edge-admin "$ADMIN_PASS" >/dev/null
    cat >"$d/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $d/dynsec.json
listener ${EDGE_PORTS[e - 1]} 127.0.0.1
max_connections $((per_edge + 100))
# One window for every client of this broker, the bridge's own towards the core included
# (Mosquitto has no per-bridge setting): agents keep at most 16 in flight anyway.
max_inflight_messages ${BRIDGE_INFLIGHT:-1000}
# Held for the bridge while the core (or the link to it) is down: 500 msg/s from 15,000
# agents is 30,000 a minute.
max_queued_messages 1000000
max_queued_bytes 536870912
max_packet_size 65536
# A graceful restart keeps what was queued for the bridge (written at exit).
persistence true
persistence_location $d/
autosave_interval 60
log_dest stderr
log_type error
log_type warning

connection core
address 127.0.0.1:$CORE_PORT
bridge_protocol_version mqttv311
remote_clientid dozor-bridge-edge$e
remote_username bridge-edge$e
remote_password $BRIDGE_PASS
# A persistent session at the core: acks for this edge's agents wait there while it restarts.
cleansession false
try_private true
notifications false
keepalive_interval 30
restart_timeout 1 10
topic dozor/v1/+/+/birth out 1
topic dozor/v1/+/+/state out 1
topic dozor/v1/+/+/hb out 1
topic dozor/v1/+/+/probe out 1
topic dozor/v1/+/+/birth-replay out 1
topic dozor/v1/+/+/hb-replay out 1
topic dozor/v1/+/+/probe-replay out 1
EOF
    # Downstream only the topics of this edge's МО (every МО index ≡ e-1 modulo EDGES; МО ids as
    # loadgen/fleet.rs makes them): an edge subscribing to all acks would receive every other
    # edge's too.
    for m in $(seq $((e - 1)) "$EDGES" $((MO_COUNT - 1))); do
        echo "topic dozor/v1/1.2.643.5.1.13.13.12.2.27.$((1000 + m))/+/ack in 1"
        echo "topic dozor/v1/1.2.643.5.1.13.13.12.2.27.$((1000 + m))/+/cfg in 1"
    done >>"$d/mosquitto.conf"
done
chmod -R a+rwX "$WORK"
CORE_PID=$(bash "$WORK/broker.sh" core)
wait_port "$CORE_PORT"
ctl() { mosquitto_ctrl -h 127.0.0.1 -p "$CORE_PORT" -u dozor-collector -P "$ADMIN_PASS" dynsec "$@" 2>&1 >/dev/null | grep -v -e 'without encryption' -e 'visible on the network' -e '^$' >&2 || true; }
# The collector's role, as `identity::dynsec::collector_commands` makes it.
ctl createRole dozor-collector
ctl addRoleACL dozor-collector subscribePattern 'dozor/v1/#' allow
ctl addRoleACL dozor-collector publishClientReceive 'dozor/v1/#' allow
ctl addRoleACL dozor-collector publishClientSend 'dozor/v1/+/+/ack' allow
ctl addRoleACL dozor-collector publishClientSend 'dozor/v1/+/+/cfg' allow
ctl addClientRole dozor-collector dozor-collector 10
ctl createRole dozor-bridge
ctl addRoleACL dozor-bridge publishClientSend 'dozor/v1/#' allow
ctl addRoleACL dozor-bridge publishClientReceive 'dozor/v1/#' allow
ctl addRoleACL dozor-bridge subscribePattern 'dozor/v1/#' allow
for e in $(seq "$EDGES"); do
    ctl createClient "bridge-edge$e" -c "dozor-bridge-edge$e" -p "$BRIDGE_PASS"
    ctl addClientRole "bridge-edge$e" dozor-bridge
done
pids="core:$CORE_PID"
edges=
edge_files=
for e in $(seq "$EDGES"); do
    edges+="${edges:+,}mqtt://127.0.0.1:${EDGE_PORTS[e - 1]}"
    edge_files+="${edge_files:+,}$WORK/edge$e/dynsec.json"
done
start_edges() {
    local e p
    for e in $(seq "$EDGES"); do
        p=$(bash "$WORK/broker.sh" "edge$e")
        wait_port "${EDGE_PORTS[e - 1]}"
        pids+=",edge$e:$p"
    done
}

# The collector: enrolled mode, the core's dynsec admin.
printf '%s' "$ADMIN_PASS" >"$WORK/collector-pass"
cat >"$WORK/collector.toml" <<EOF
[mqtt]
type = "external"
url = "mqtt://127.0.0.1:$CORE_PORT"
username = "dozor-collector"
password_file = "$WORK/collector-pass"
dynsec = false
[security]
mode = "enrolled"
EOF
mkdir -p "$WORK/data"
# start.sh and restart.sh (restart.sh takes the signal as its argument from the load generator).
write_collector_ctl "$BIN/dozor-collector" "$HTTP_PORT" warn,dozor_collector::identity=info TERM
# Stops edge 1 (EDGE_STOP), waits for it to exit, starts it again.
cat >"$WORK/edge-restart.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
old=\$(cat "$WORK/edge1.pid")
kill -${EDGE_STOP:-TERM} \$old
for _ in \$(seq 600); do kill -0 \$old 2>/dev/null || break; sleep 0.05; done
kill -0 \$old 2>/dev/null && { echo "edge 1 (\$old) did not stop in 30 s" >&2; exit 1; }
echo "# edge 1 (\$old) stopped by SIG${EDGE_STOP:-TERM}, load \$(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec bash "$WORK/broker.sh" edge1
EOF
COLL_PID=$(bash "$WORK/start.sh")

RUN_ID=$(date +%s)
common=(--hosts "$AGENTS" --mo-count "$MO_COUNT" --run-id "$RUN_ID")
if [[ ${PROVISION:-file} == commands ]]; then
    start_edges
    DOZOR_BENCH_EDGE_ADMIN="edge-admin:$ADMIN_PASS" "$BIN/dozor-loadgen" --scenario provision "${common[@]}" \
        --data-dir "$WORK/data" --edges "$edges" --timeout-secs "${TIMEOUT_SECS:-900}"
else
    "$BIN/dozor-loadgen" --scenario provision "${common[@]}" --data-dir "$WORK/data" --edge-files "$edge_files"
    start_edges
fi
echo "# provisioned, load $(load); edge 1 VmRSS $(awk '/^VmRSS/ {print $2, $3}' "/proc/$(cat "$WORK/edge1.pid")/status") with its dynsec clients loaded"
# The collector notices identity.db's change (PRAGMA data_version) within seconds.
sleep 5

STATUS=$WORK/status
mkdir -p "$STATUS"
for e in $(seq "$EDGES"); do
    "$BIN/dozor-loadgen" --scenario agents "${common[@]}" --slice $((e - 1)) --slices "$EDGES" \
        --mqtt-url "mqtt://127.0.0.1:${EDGE_PORTS[e - 1]}" \
        --ramp-secs "$RAMP_SECS" --status-dir "$STATUS" --threads 1 2>>"$WORK/agents.$e.stderr" &
    echo $! >"$WORK/agents$e.pid"
done
set +e
"$BIN/dozor-loadgen" --scenario bridge --hosts "$AGENTS" --slices "$EDGES" --status-dir "$STATUS" \
    --api-url "http://127.0.0.1:$HTTP_PORT" --pids "collector:$COLL_PID,$pids" \
    --restart-cmd "bash $WORK/restart.sh" --edge-restart-cmd "bash $WORK/edge-restart.sh" \
    --steady-secs "${STEADY_SECS:-60}" --settle-secs "${SETTLE_SECS:-90}" --timeout-secs "${TIMEOUT_SECS:-900}"
rc=$?
set -e
echo "# load $(load); collector VmHWM $(awk '/^VmHWM/ {print $2, $3}' "/proc/$(cat "$WORK/collector.pid")/status"); core VmHWM $(awk '/^VmHWM/ {print $2, $3}' "/proc/$CORE_PID/status"); warnings in the collector's log: $(grep -c WARN "$WORK/collector.stderr" || true)"
grep -E 'WARN|ERROR' "$WORK/collector.stderr" | cut -c1-300 | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -8 || true
for b in core $(seq -f 'edge%g' "$EDGES"); do
    echo "# $b log: $(wc -l <"$WORK/$b/log") lines"
    sort "$WORK/$b/log" | cut -d' ' -f2- | sed -E 's/[0-9]+/N/g' | uniq -c | sort -rn | head -4
done
for e in $(seq "$EDGES"); do
    echo "# agents $e: $(cat "$STATUS/agents.$((e - 1))" 2>/dev/null)"
done
exit $rc
