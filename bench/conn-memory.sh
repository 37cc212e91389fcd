#!/usr/bin/env bash
# The embedded broker's memory per connected agent (issue 15; docs/benchmarks.md, "Collector
# memory per connected agent").
#
# For each agent count of COUNTS and each collector binary of COLLECTORS (interleaved, so that
# the binaries compared share the machine's load), starts a fresh collector with its embedded
# broker (open mode, plain TCP), connects that many simulated agents with `dozor-loadgen
# --scenario restart` (one MQTT connection and client id per agent, subscribed to its ack topic,
# a retained birth and a heartbeat every 30 s each), and reads the collector's /proc twice:
# `connected` (every agent connected and online, ~5 s later) and `held` (HOLD_SECS later: every
# agent has sent HOLD_SECS/30 more heartbeats and had them acknowledged). The "restart" the
# load generator asks for only records the figures; nothing is restarted. With 0 agents the
# collector is read 10 s after it listens.
#
# Printed per row: VmRSS, RssAnon, RssFile, open files, threads, and per agent the RSS above the
# same binary's 0-agent row and the open files.
#
# Environment: COLLECTORS ("name=path …"; a path may be followed by "@VAR=value,VAR=value" to
# run it with that environment, e.g. MALLOC_ARENA_MAX=2; default: "current=target/release/
# dozor-collector"), COUNTS ("0 1000 3000"; keep the 0: the per-agent figures are above it),
# HOLD_SECS (65), MO_COUNT (100), RAMP_SECS (count / 100), LOADGEN (target/release/dozor-loadgen),
# HEAPTRACK (empty; a name of COLLECTORS to run under heaptrack, its files kept in KEEP_DIR; it
# sees only what goes through malloc: SQLite and C libraries, not the collector's Rust
# allocations, which go to mimalloc), KEEP_DIR (/var/tmp).
# A collector with N agents needs N + ~40 open files (3 N before the gate's in-process pipe to
# rumqttd): the hard limit (`ulimit -Hn`) bounds N.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

COLLECTORS=${COLLECTORS:-current=target/release/dozor-collector}
COUNTS=${COUNTS:-0 1000 3000}
HOLD_SECS=${HOLD_SECS:-65}
MO_COUNT=${MO_COUNT:-100}
LOADGEN=${LOADGEN:-target/release/dozor-loadgen}
KEEP_DIR=${KEEP_DIR:-/var/tmp}
[[ -x $LOADGEN ]] || { echo "$LOADGEN not built" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/dozor-connmem.XXXXXX)
cleanup() {
    local pids
    pids=$(jobs -p)
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    [[ -f $WORK/collector.pid ]] && kill -KILL "$(cat "$WORK/collector.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Prints one row of figures for the process $1.
measure() {
    local pid=$1 s
    s=/proc/$pid/status
    printf 'rss_kib=%s anon_kib=%s file_kib=%s fds=%s threads=%s load=%s' \
        "$(awk '/^VmRSS/ {print $2}' "$s")" "$(awk '/^RssAnon/ {print $2}' "$s")" \
        "$(awk '/^RssFile/ {print $2}' "$s")" "$(ls "/proc/$pid/fd" | wc -l)" \
        "$(awk '/^Threads/ {print $2}' "$s")" "$(cut -d' ' -f1 /proc/loadavg)"
}

# The figures of one run go to $WORK/rows: "name count point key=value …".
: >"$WORK/rows"
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); COUNTS=\"$COUNTS\" HOLD_SECS=$HOLD_SECS"
for count in $COUNTS; do
    for entry in $COLLECTORS; do
        name=${entry%%=*}
        spec=${entry#*=}
        bin=${spec%%@*}
        envs=()
        [[ $spec == *@* ]] && IFS=, read -r -a envs <<<"${spec#*@}"
        [[ -x $bin ]] || { echo "$bin not built" >&2; exit 1; }
        mqtt_port=$(free_port)
        http_port=$(free_port)
        rm -rf "$WORK/data" && mkdir -p "$WORK/data"
        cat >"$WORK/collector.toml" <<EOF
[mqtt]
listen = "0.0.0.0:$mqtt_port"
max_connections = $((count + count / 10 + 100))
[security]
mode = "open"
EOF
        wrap=()
        if [[ ${HEAPTRACK:-} == "$name" ]]; then
            wrap=(heaptrack -o "$KEEP_DIR/connmem-heaptrack-$name-$count")
        fi
        env "${envs[@]}" DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=warn "${wrap[@]}" "$bin" \
            --config "$WORK/collector.toml" --data-dir "$WORK/data" \
            --http-listen "127.0.0.1:$http_port" >"$WORK/collector.stdout" 2>"$WORK/collector.stderr" &
        runner=$!
        pid=
        real=$(readlink -f "$bin")
        for _ in $(seq 1200); do
            if grep -q '^dozor-collector listening' "$WORK/collector.stdout" 2>/dev/null; then
                # Under heaptrack the collector is not the job itself: find it by its binary.
                for p in $runner $(pgrep -f -- "--data-dir $WORK/data" || true); do
                    [[ $(readlink -f "/proc/$p/exe" 2>/dev/null) == "$real" ]] && { pid=$p; break; }
                done
                break
            fi
            kill -0 $runner 2>/dev/null || { tail -5 "$WORK/collector.stderr" >&2; exit 1; }
            sleep 0.05
        done
        [[ -n $pid ]] || { echo "$name did not start" >&2; exit 1; }
        echo "$pid" >"$WORK/collector.pid"
        if ((count == 0)); then
            sleep 10
            echo "$name 0 connected $(measure "$pid")" >>"$WORK/rows"
            echo "$name 0 held $(measure "$pid")" >>"$WORK/rows"
        else
            # The "restart" records the connected figures, and the held ones HOLD_SECS later
            # (the load generator is still holding every connection then: its settle phase
            # lasts HOLD_SECS + 10 s).
            cat >"$WORK/record.sh" <<EOF
#!/usr/bin/env bash
$(declare -f measure)
echo "$name $count connected \$(measure $pid)" >>"$WORK/rows"
( sleep $HOLD_SECS; echo "$name $count held \$(measure $pid)" >>"$WORK/rows" ) </dev/null >/dev/null 2>&1 &
echo $pid
EOF
            "$LOADGEN" --scenario restart --mqtt-url "mqtt://127.0.0.1:$mqtt_port" \
                --mqtt-hosts 127.0.0.1 --api-url "http://127.0.0.1:$http_port" \
                --collector-pid "$pid" --hosts "$count" --mo-count "$MO_COUNT" \
                --ramp-secs "${RAMP_SECS:-$((count / 100))}" --restart-cmd "bash $WORK/record.sh" \
                --settle-secs $((HOLD_SECS + 10)) --timeout-secs 600 --threads 2 \
                >"$WORK/loadgen.out" 2>"$WORK/loadgen.err" ||
                { tail -5 "$WORK/loadgen.err" >&2; echo "loadgen failed for $name at $count" >&2; exit 1; }
            grep -q "^$name $count held" "$WORK/rows" || sleep 2
        fi
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
        rm -f "$WORK/collector.pid"
        grep "^$name $count " "$WORK/rows"
    done
done

echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# per agent: RSS above the same binary's 0-agent row (same point), open files"
awk '
    { for (i = 4; i <= NF; i++) { split($i, kv, "="); v[$1, $2, $3, kv[1]] = kv[2] } rows[NR] = $1 " " $2 " " $3 }
    END {
        for (r = 1; r <= NR; r++) {
            split(rows[r], k, " ")
            if (k[2] == 0) continue
            base = v[k[1], 0, k[3], "rss_kib"]
            printf "%s %s agents, %s: RSS %.1f MiB, %.1f KiB per agent above 0 agents (%.3f MiB); open files %.2f per agent; load %s\n",
                k[1], k[2], k[3], v[k[1], k[2], k[3], "rss_kib"] / 1024,
                (v[k[1], k[2], k[3], "rss_kib"] - base) / k[2],
                (v[k[1], k[2], k[3], "rss_kib"] - base) / k[2] / 1024,
                v[k[1], k[2], k[3], "fds"] / k[2], v[k[1], k[2], k[3], "load"]
        }
    }' "$WORK/rows"
