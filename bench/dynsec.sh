#!/usr/bin/env bash
# A collector start against Mosquitto 2.0's dynamic-security plugin with N enrolled identities
# (`mqtt.dynsec = true`; docs/benchmarks.md "dynsec: a collector start against a provisioned
# Mosquitto"). The plugin rewrites its whole JSON file after each command it applies, so what
# the collector sends at start decides how long the broker is busy.
#
# Cases, each with a broker and a data dir of its own, the binaries one after the other:
# - restart: the broker already holds every identity (`dozor-loadgen --scenario provision`
#   writes identity.db and the broker's dynsec file before the broker starts);
# - first (FIRST_N > 0): a fresh broker that holds only its admin, and FIRST_N identities.
# Binaries: AFTER (default target/release/dozor-collector) and BEFORE (optional: a copy of an
# older collector, e.g. `cp target/release/dozor-collector /var/tmp/dynsec-before` at the base).
# Printed per case and binary: the commands the collector sent (its "provisioning broker
# identities" log lines), the seconds from the collector's start until the broker was last busy
# (a 0.5 s sample with at least 20 ms of its CPU; QUIET_SECS without one ends the wait), the
# broker's CPU seconds in that time, the clients the broker holds afterwards, the load average.
#
# Environment: N (2000), FIRST_N (0), MO_COUNT (10), QUIET_SECS (10), BIN (target/release),
# AFTER, BEFORE, KEEP (0). Every process started here is killed on exit.
set -euo pipefail
export PATH=$PATH:/usr/sbin
N=${N:-2000}
FIRST_N=${FIRST_N:-0}
BIN=${BIN:-target/release}
AFTER=${AFTER:-$BIN/dozor-collector}
BEFORE=${BEFORE:-}
QUIET=${QUIET_SECS:-10}
WORK=$(mktemp -d /var/tmp/dynsec-bench.XXXXXX)
chmod 777 "$WORK"
PASS=bench-admin-secret
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)

# A broker on its own port with `$1/dynsec.json` (already written) as its plugin's file.
broker() {
    local dir=$1 port=$2
    chmod 666 "$dir/dynsec.json"
    chmod 777 "$dir"
    cat >"$dir/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $dir/dynsec.json
listener $port 127.0.0.1
persistence false
max_packet_size 1048576
EOF
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    echo $!
}

wait_port() {
    for _ in $(seq 200); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

# run CASE LABEL COLLECTOR HOSTS: a broker and a collector for one case and binary.
run() {
    local case=$1 label=$2 collector=$3 hosts=$4
    local dir="$WORK/$case-$label" port http
    mkdir -p "$dir/data"
    port=$(free_port)
    http=$(free_port)
    mosquitto_ctrl dynsec init "$dir/dynsec.json" dozor-collector "$PASS" >/dev/null
    # identity.db with its schema, then the fleet written into it.
    "$collector" --data-dir "$dir/data" token create --mo 1.2.643.5.1.13.13.12.2.27.11 >/dev/null 2>"$dir/token.log"
    if [[ $case == restart ]]; then
        "$BIN/dozor-loadgen" --scenario provision --hosts "$hosts" --mo-count "${MO_COUNT:-10}" \
            --run-id 1 --data-dir "$dir/data" --edge-files "$dir/dynsec.json" >/dev/null 2>"$dir/provision.log"
    else
        # identity.db only: the broker's file stays as `dynsec init` made it.
        "$BIN/dozor-loadgen" --scenario provision --hosts "$hosts" --mo-count "${MO_COUNT:-10}" \
            --run-id 1 --data-dir "$dir/data" >/dev/null 2>"$dir/provision.log"
    fi
    local bpid
    bpid=$(broker "$dir" "$port")
    pids+=("$bpid")
    wait_port "$port"
    printf '%s' "$PASS" >"$dir/pass"
    cat >"$dir/collector.toml" <<EOF
[mqtt]
type = "external"
url = "mqtt://127.0.0.1:$port"
username = "dozor-collector"
password_file = "$dir/pass"
dynsec = true
[security]
mode = "enrolled"
EOF
    local before_load t0 c0 cpid last now c prev
    before_load=$(load)
    c0=$(cpu_ticks "$bpid")
    t0=$(date +%s.%N)
    NO_COLOR=1 RUST_LOG=warn,dozor_collector::identity=info,rumqttc=debug "$collector" --config "$dir/collector.toml" \
        --data-dir "$dir/data" --http-listen "127.0.0.1:$http" >"$dir/collector.log" 2>&1 &
    cpid=$!
    pids+=("$cpid")
    last=$t0
    prev=$c0
    while :; do
        sleep 0.5
        now=$(date +%s.%N)
        c=$(cpu_ticks "$bpid")
        if ((c - prev >= 2 * tick / 100)); then last=$now; fi
        prev=$c
        awk -v n="$now" -v l="$last" -v q="$QUIET" 'BEGIN { exit !(n - l >= q) }' && break
    done
    local busy cpu sent clients
    busy=$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.1f", b - a }')
    cpu=$(awk -v a="$c0" -v b="$prev" -v t="$tick" 'BEGIN { printf "%.2f", (b - a) / t }')
    sent=$(grep "provisioning broker identities" "$dir/collector.log" 2>/dev/null |
        { grep -o "commands=[0-9]*" || true; } | cut -d= -f2 | awk "{ s += \$1 } END { print s + 0 }" || true)
    clients=$(mosquitto_ctrl -p "$port" -u dozor-collector -P "$PASS" dynsec listClients 2>/dev/null | grep -c . || true)
    kill "$cpid" "$bpid" 2>/dev/null || true
    wait "$cpid" "$bpid" 2>/dev/null || true
    echo "dynsec case=$case binary=$label identities=$hosts commands_sent=$sent broker_busy_s=$busy broker_cpu_s=$cpu broker_clients_after=$clients load_before=\"$before_load\" load_after=\"$(load)\""
    grep -m3 -i 'dynsec' "$dir/collector.log" | sed 's/^/#   /' >&2 || true
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$dir"
}

for label in before after; do
    if [[ $label == before ]]; then bin=$BEFORE; else bin=$AFTER; fi
    [[ -n $bin ]] || continue
    run restart "$label" "$bin" "$N"
done
if ((FIRST_N > 0)); then
    for label in before after; do
        if [[ $label == before ]]; then bin=$BEFORE; else bin=$AFTER; fi
        [[ -n $bin ]] || continue
        run first "$label" "$bin" "$FIRST_N"
    done
fi
