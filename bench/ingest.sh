#!/usr/bin/env bash
# Collector ingest benchmark (see docs/benchmarks.md, "Collector ingest").
#
# Publishes MESSAGES heartbeats of HOSTS simulated hosts with dozor-loadgen and measures how
# fast they are drained, in these configurations:
#   pipeline   the collector's ingest without a broker (dozor-pipeline-bench: decode, pipeline,
#              SQLite store in-process), i.e. what the collector itself can take
#   embedded   dozor-collector with its embedded broker (rumqttd)
#   embedded-baseline  the same with the collector binary BASELINE_BIN (an older build kept as
#              a copy), to compare before and after in the same run
#   mosquitto  dozor-collector against a Mosquitto started here
#   sub        mosquitto_sub draining the same load from a Mosquitto started here (the baseline)
#   before     as mosquitto, with the collector binary COLLECTOR_BEFORE (an older build, to
#              compare a change before/after in the same run; its ratio is printed beside)
# Each configuration runs RUNS times on fresh processes. Reported per run: messages/s from
# the first to the last accepted message (collector) and end to end (from the load generator's
# start until the last message is drained), CPU seconds and % of the drain and of the broker,
# the load generator's own rate and CPU, and peak RSS (VmHWM). After each run (all CONFIGS),
# the end-to-end rates of collector+mosquitto and collector+embedded as a ratio to mosquitto_sub's
# in that same run; at the end, a table of those ratios per run with the load average.
#
# Everything listens on 127.0.0.1 only; every process started here is killed on exit.
#
# Environment: MESSAGES (1000000), HOSTS (10000), MO_COUNT (100), CONNECTIONS (8), QOS (1),
# RATE (0: unlimited), RUNS (2), CONFIGS ("pipeline embedded mosquitto sub"), TIMEOUT_SECS (300),
# STALL_SECS (20: give up when nothing more is accepted this long after the load generator
# finished), COLLECTOR_TOML (extra lines for the collector's config file),
# CARGO_TARGET_DIR (./target), BUILD (1; 0 to use the binaries already built), COLLECTOR_BIN
# (the collector to measure; default the release build's), COLLECTOR_BEFORE (an older collector
# binary for the `before` config: against Mosquitto, same run), BASELINE_BIN (an older collector
# binary for the `embedded-baseline` config: with its embedded broker, same run), SETTLE_SECS
# (1.5: after the drain, before the CPU is read, so the store's last journal apply counts).
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-1000000}
HOSTS=${HOSTS:-10000}
MO_COUNT=${MO_COUNT:-100}
CONNECTIONS=${CONNECTIONS:-8}
QOS=${QOS:-1}
RATE=${RATE:-0}
RUNS=${RUNS:-2}
CONFIGS=${CONFIGS:-"pipeline embedded mosquitto sub"}
TIMEOUT_SECS=${TIMEOUT_SECS:-300}
STALL_SECS=${STALL_SECS:-20}
COLLECTOR_TOML=${COLLECTOR_TOML:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BUILD=${BUILD:-1}
HZ=$(getconf CLK_TCK)

if [[ $BUILD == 1 ]]; then
    echo "+ CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests
fi
BIN=$TARGET_DIR/release
for b in dozor-collector dozor-loadgen dozor-pipeline-bench; do
    [[ -x $BIN/$b ]] || { echo "$BIN/$b not built" >&2; exit 1; }
done
COLLECTOR_BIN=${COLLECTOR_BIN:-$BIN/dozor-collector}
[[ -x $COLLECTOR_BIN ]] || { echo "$COLLECTOR_BIN is not executable" >&2; exit 1; }
BASELINE_BIN=${BASELINE_BIN:-}
if [[ " $CONFIGS " == *" embedded-baseline "* ]]; then
    [[ -x $BASELINE_BIN ]] || { echo "embedded-baseline needs BASELINE_BIN (an executable collector)" >&2; exit 1; }
fi
COLLECTOR_BEFORE=${COLLECTOR_BEFORE:-}
if [[ " $CONFIGS " == *" before "* ]]; then
    [[ -x $COLLECTOR_BEFORE ]] || { echo "config before: set COLLECTOR_BEFORE to a collector binary" >&2; exit 1; }
fi
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
for b in mosquitto mosquitto_sub curl; do
    command -v "$b" >/dev/null || { echo "$b is required" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/dozor-bench.XXXXXX)
# Kills what this script started and is still running (its own background jobs only, so a
# recycled PID of a process that already ended is never hit).
cleanup() {
    local pids
    pids=$(jobs -p)
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# --- helpers -------------------------------------------------------------------------------

now() { date +%s.%N; }
# CPU ticks (utime + stime) of a process, all threads.
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
# Peak RSS, kB.
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Per-thread CPU ticks, "name ticks" lines summed by thread name (tokio workers, broker, …).
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
    done 2>/dev/null | awk '{s[$1] += $2} END {for (k in s) print k, s[k]}' | sort
}
# True while a process runs (a finished child not yet waited for is a zombie).
running() { [[ -e /proc/$1 && $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]; }
calc() { awk "BEGIN {printf \"$1\", ($2)}"; }

free_port() {
    local p
    while :; do
        # Below Linux's ephemeral range (32768–60999): a port there may be the local end of
        # someone's outgoing connection (not connectable, yet not bindable either).
        p=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

wait_port() {
    local i
    # 30 s: a loaded shared box has taken more than 10 s to start Mosquitto.
    for i in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

MOSQ_PID=
MOSQ_PORT=
start_mosquitto() {
    MOSQ_PORT=$(free_port)
    local dir=$WORK/mosquitto-$MOSQ_PORT
    mkdir -p "$dir"
    cat >"$dir/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20000
max_queued_messages 0
log_dest stderr
log_type error
log_type warning
EOF
    mosquitto -c "$dir/mosquitto.conf" 2>"$dir/log" &
    MOSQ_PID=$!
    wait_port "$MOSQ_PORT"
}

stop() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 400); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The collector's config: the per-host flood limit is raised (the benchmark sends far more
# than an agent's one heartbeat per 30 s), and the load generator publishes unsigned for many
# hosts per connection, so the collector runs open (the cost of enrolled mode is measured by
# bench/security.sh); every other option is the default.
cat >"$WORK/collector.toml" <<EOF
$COLLECTOR_TOML
[limits]
max_msgs_per_host_per_min = 1000000
[security]
mode = "open"
EOF

COLL_PID=
COLL_HTTP=
COLL_MQTT_PORT=
start_collector() { # $1: embedded | mqtt://host:port, $2: binary (default COLLECTOR_BIN)
    local bin=${2:-$COLLECTOR_BIN}
    local dir=$WORK/collector-$RANDOM$RANDOM
    mkdir -p "$dir/data"
    local broker_args=(--mqtt-listen 127.0.0.1:0)
    [[ $1 == embedded ]] || broker_args=(--mqtt-url "$1")
    # The benchmark reads /metrics without logging in.
    DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=warn "$bin" --config "$WORK/collector.toml" \
        --data-dir "$dir/data" --http-listen 127.0.0.1:0 "${broker_args[@]}" \
        >"$dir/stdout" 2>"$dir/stderr" &
    COLL_PID=$!
    local i line=
    for i in $(seq 600); do
        line=$(grep -m1 '^dozor-collector listening' "$dir/stdout" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$COLL_PID" 2>/dev/null || { cat "$dir/stderr" >&2; return 1; }
        sleep 0.05
    done
    [[ -n $line ]] || { echo "collector did not start" >&2; return 1; }
    COLL_HTTP=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$line")
    COLL_MQTT_PORT=$(sed -E 's/.*mqtt=[^ ]*:([0-9]+).*/\1/' <<<"$line")
    COLL_STDERR=$dir/stderr
}

# The embedded broker's gateway: "pauses resets" of its backlog window (absent in older builds).
gate_counts() {
    curl -fsS --max-time 2 "http://$COLL_HTTP/metrics" 2>/dev/null | awk '
        /^dozor_mqtt_gate_backlog_pauses_total/ {p = $NF}
        /^dozor_mqtt_gate_backlog_resets_total/ {r = $NF}
        END {printf "%s %s\n", (p == "" ? "-" : p), (r == "" ? "-" : r)}'
}

# accepted duplicates rejected, from /metrics.
counts() {
    curl -fsS --max-time 2 "http://$COLL_HTTP/metrics" 2>/dev/null | awk '
        /^dozor_messages_accepted_total/ {a += $NF}
        /^dozor_messages_duplicate_total/ {d += $NF}
        /^dozor_messages_rejected_total/ {r += $NF}
        END {printf "%d %d %d\n", a, d, r}'
}

LOADGEN_PID=
start_loadgen() { # $1: port, $2: output file
    "$BIN/dozor-loadgen" --mqtt-url "mqtt://127.0.0.1:$1" --hosts "$HOSTS" --mo-count "$MO_COUNT" \
        --messages "$MESSAGES" --connections "$CONNECTIONS" --qos "$QOS" --rate "$RATE" \
        --timeout-secs "$TIMEOUT_SECS" >"$2" 2>"$2.err" &
    LOADGEN_PID=$!
}

loadgen_field() { # $1: file, $2: key
    sed -nE "s/.* $2=([^ ]+).*/\1/p" "$1" | tail -1
}

RESULTS=$WORK/results
RATIOS=$WORK/ratios
# End-to-end msgs/s of each configuration in the current run (for the ratios to mosquitto_sub).
declare -A E2E
# One line per embedded run: what rumqttd dropped.
DROPS=()
echo "| run | load avg | mosquitto_sub msgs/s | collector+mosquitto msgs/s | ratio | collector+embedded msgs/s | ratio | before+mosquitto msgs/s | ratio |" >"$RATIOS"
echo "|---|---|---|---|---|---|---|---|---|" >>"$RATIOS"

# Ratio of a configuration's end-to-end rate to mosquitto_sub's in the same run.
ratio() { # $1: config
    local v=${E2E[$1]:-} s=${E2E[sub]:-}
    if [[ -z $v || -z $s ]]; then
        echo "-"
    elif [[ $v == *lost* ]]; then
        echo "$(calc "%.2f" "${v%% *} / $s"), not all accepted"
    else
        calc "%.2f" "$v / $s"
    fi
}
echo "| config | run | msgs/s first→last | msgs/s end-to-end | drain CPU s (%) | broker CPU s (%) | drain RSS MB | broker RSS MB | loadgen msgs/s (CPU %) | load avg |" >"$RESULTS"
echo "|---|---|---|---|---|---|---|---|---|---|" >>"$RESULTS"

# --- one run with the collector ------------------------------------------------------------

run_collector() { # $1: embedded | embedded-baseline | mosquitto | before, $2: run number
    local cfg=$1 run=$2 port broker_pid=
    if [[ $cfg == mosquitto || $cfg == before ]]; then
        start_mosquitto
        broker_pid=$MOSQ_PID
        if [[ $cfg == before ]]; then
            start_collector "mqtt://127.0.0.1:$MOSQ_PORT" "$COLLECTOR_BEFORE"
        else
            start_collector "mqtt://127.0.0.1:$MOSQ_PORT"
        fi
        port=$MOSQ_PORT
    elif [[ $cfg == embedded-baseline ]]; then
        start_collector embedded "$BASELINE_BIN"
        port=$COLL_MQTT_PORT
    else
        start_collector embedded
        port=$COLL_MQTT_PORT
    fi
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    sleep 0.5 # let the collector subscribe
    local c0 b0 t0
    local threads0=$WORK/threads0
    thread_ticks "$COLL_PID" >"$threads0"
    c0=$(ticks "$COLL_PID")
    b0=$([[ -n $broker_pid ]] && ticks "$broker_pid" || echo 0)
    t0=$(now)
    start_loadgen "$port" "$WORK/loadgen.out"
    local t_first= t_last= last_a=0 a d r total=0 deadline
    deadline=$(calc "%d" "$(date +%s) + $TIMEOUT_SECS")
    while :; do
        read -r a d r <<<"$(counts)" || true
        a=${a:-0} d=${d:-0} r=${r:-0}
        local t
        t=$(now)
        if ((a > last_a)); then
            [[ -n $t_first ]] || t_first=$t
            t_last=$t
            last_a=$a
        fi
        total=$((a + d + r))
        ((total >= MESSAGES)) && break
        if (($(date +%s) > deadline)); then
            echo "  timed out: accepted=$a duplicates=$d rejected=$r of $MESSAGES" >&2
            break
        fi
        if ! running "$LOADGEN_PID" && (($(calc "%d" "$t - ${t_last:-$t0} > $STALL_SECS"))); then
            echo "  stalled: nothing accepted for $STALL_SECS s after the load generator finished: accepted=$a duplicates=$d rejected=$r of $MESSAGES" >&2
            # Evidence: bytes the collector leaves unread (Recv-Q) / unsent (Send-Q) on its
            # MQTT connection, and its CPU use while stalled.
            local s0
            s0=$(ticks "$COLL_PID")
            sleep 2
            echo "  collector CPU while stalled: $(calc "%.2f" "($(ticks "$COLL_PID") - $s0) / $HZ / 2 * 100") %" >&2
            ss -tnp 2>/dev/null | awk -v p="pid=$COLL_PID," 'index($0, p) && $4 !~ /:'"${COLL_HTTP##*:}"'$/ {print "  collector socket: Recv-Q " $2 " Send-Q " $3 " " $4 " -> " $5}' >&2
            break
        fi
        sleep 0.1
    done
    local c1 b1 t1 rss brss=0
    t1=$(now)
    # The store applies its journal to the tables up to store.journal_apply_ms (1 s) after the
    # last batch: let it, so that its CPU counts (an idle collector uses none meanwhile).
    sleep "${SETTLE_SECS:-1.5}"
    c1=$(ticks "$COLL_PID")
    b1=$([[ -n $broker_pid ]] && ticks "$broker_pid" || echo 0)
    rss=$(hwm "$COLL_PID")
    [[ -n $broker_pid ]] && brss=$(hwm "$broker_pid")
    local gate=
    [[ $cfg == embedded* ]] && gate=$(gate_counts)
    wait "$LOADGEN_PID" || echo "  loadgen failed: $(tail -1 "$WORK/loadgen.out.err")" >&2
    local wall rate e2e ccpu bcpu lrate lcpu lsecs
    wall=$(calc "%.3f" "$t1 - $t0")
    t_first=${t_first:-$t0} t_last=${t_last:-$t1}
    rate=$(calc "%.0f" "$a / ($t_last - $t_first + 1e-9)")
    e2e=$(calc "%.0f" "$a / ($t_last - $t0)")
    ((total >= MESSAGES)) || rate="$rate (stalled at $a)"
    ccpu=$(calc "%.2f" "($c1 - $c0) / $HZ")
    bcpu=$(calc "%.2f" "($b1 - $b0) / $HZ")
    lrate=$(loadgen_field "$WORK/loadgen.out" rate)
    lcpu=$(loadgen_field "$WORK/loadgen.out" cpu_secs)
    lsecs=$(loadgen_field "$WORK/loadgen.out" secs)
    E2E[$cfg]=$e2e
    ((total >= MESSAGES)) || E2E[$cfg]="$e2e (lost $((MESSAGES - total)))"
    echo "== $cfg run $run: accepted=$a duplicates=$d rejected=$r in ${wall} s (load avg $load)"
    echo "   collector: $rate msgs/s first→last accepted, $e2e msgs/s end to end; CPU ${ccpu} s ($(calc "%.0f" "$ccpu / $wall * 100") %), peak RSS $((rss / 1024)) MB"
    [[ -n $broker_pid ]] && echo "   mosquitto: CPU ${bcpu} s ($(calc "%.0f" "$bcpu / $wall * 100") %), peak RSS $((brss / 1024)) MB"
    echo "   loadgen:   ${lrate:-?} msgs/s acknowledged by the broker in ${lsecs:-?} s, CPU ${lcpu:-?} s"
    if [[ $cfg == embedded* ]]; then
        # Drops inside rumqttd: a subscriber's cursor jumping over a dropped log segment.
        local jumps
        jumps=$(grep -c 'cursor start jumped' "$COLL_STDERR" || true)
        echo "   embedded broker: lost $((MESSAGES - total)) of $MESSAGES (rumqttd cursor jumps logged: $jumps); gateway backlog pauses/resets: ${gate:-- -}"
        DROPS+=("$cfg run $run: lost $((MESSAGES - total)), cursor jumps $jumps, backlog pauses/resets ${gate:-- -}, peak RSS $((rss / 1024)) MB, load $load")
    fi
    echo "   collector CPU by thread (s):"
    thread_ticks "$COLL_PID" | join -a1 - "$threads0" |
        awk -v hz="$HZ" '{d = ($2 - ($3 == "" ? 0 : $3)) / hz; if (d >= 0.05) printf "     %-20s %6.2f\n", $1, d}'
    printf '| %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s (%s) | %s |\n' \
        "collector+$cfg" "$run" "$rate" "$e2e" "$ccpu" "$(calc "%.0f" "$ccpu / $wall * 100")" \
        "$([[ -n $broker_pid ]] && echo "$bcpu ($(calc "%.0f" "$bcpu / $wall * 100"))" || echo "in collector")" \
        "$((rss / 1024))" "$([[ -n $broker_pid ]] && echo $((brss / 1024)) || echo -)" \
        "${lrate:-?}" "$(calc "%.0f" "${lcpu:-0} / ${lsecs:-1} * 100")" "$load" >>"$RESULTS"
    grep -E 'WARN|ERROR' "$COLL_STDERR" | head -5 | sed 's/^/   collector log: /' || true
    stop "$COLL_PID"
    [[ -n $broker_pid ]] && stop "$broker_pid"
    return 0
}

# --- one run with mosquitto_sub as the drain -------------------------------------------------

run_sub() { # $1: run number
    local run=$1
    start_mosquitto
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/sub.time" \
        mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -t 'dozor/v1/+/+/hb' -q 1 -C "$MESSAGES" >/dev/null &
    local sub_pid=$!
    sleep 0.5 # let it subscribe
    local b0 t0 t1 b1 brss
    b0=$(ticks "$MOSQ_PID")
    t0=$(now)
    start_loadgen "$MOSQ_PORT" "$WORK/loadgen.out"
    local deadline
    deadline=$(calc "%d" "$(date +%s) + $TIMEOUT_SECS")
    while kill -0 "$sub_pid" 2>/dev/null; do
        if (($(date +%s) > deadline)); then
            echo "  timed out waiting for mosquitto_sub" >&2
            kill "$sub_pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    t1=$(now)
    wait "$sub_pid" || true
    b1=$(ticks "$MOSQ_PID")
    brss=$(hwm "$MOSQ_PID")
    wait "$LOADGEN_PID" || echo "  loadgen failed: $(tail -1 "$WORK/loadgen.out.err")" >&2
    local wall user sys maxrss scpu e2e bcpu lrate lcpu lsecs
    read -r wall user sys maxrss <"$WORK/sub.time" || true
    scpu=$(calc "%.2f" "${user:-0} + ${sys:-0}")
    e2e=$(calc "%.0f" "$MESSAGES / ($t1 - $t0)")
    bcpu=$(calc "%.2f" "($b1 - $b0) / $HZ")
    lrate=$(loadgen_field "$WORK/loadgen.out" rate)
    lcpu=$(loadgen_field "$WORK/loadgen.out" cpu_secs)
    lsecs=$(loadgen_field "$WORK/loadgen.out" secs)
    local d
    d=$(calc "%.3f" "$t1 - $t0")
    E2E[sub]=$e2e
    echo "== sub run $run: $MESSAGES drained in $d s (load avg $load)"
    echo "   mosquitto_sub: $e2e msgs/s end to end; CPU ${scpu} s ($(calc "%.0f" "$scpu / $d * 100") %), peak RSS $((${maxrss:-0} / 1024)) MB"
    echo "   mosquitto:     CPU ${bcpu} s ($(calc "%.0f" "$bcpu / $d * 100") %), peak RSS $((brss / 1024)) MB"
    echo "   loadgen:       ${lrate:-?} msgs/s acknowledged by the broker in ${lsecs:-?} s, CPU ${lcpu:-?} s"
    printf '| %s | %s | %s | %s | %s (%s) | %s (%s) | %s | %s | %s (%s) | %s |\n' \
        "mosquitto_sub+mosquitto" "$run" "-" "$e2e" "$scpu" "$(calc "%.0f" "$scpu / $d * 100")" \
        "$bcpu" "$(calc "%.0f" "$bcpu / $d * 100")" "$((${maxrss:-0} / 1024))" "$((brss / 1024))" \
        "${lrate:-?}" "$(calc "%.0f" "${lcpu:-0} / ${lsecs:-1} * 100")" "$load" >>"$RESULTS"
    stop "$MOSQ_PID"
}

run_pipeline() { # $1: run number
    local run=$1 load line
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    line=$("$BIN/dozor-pipeline-bench" --messages "$MESSAGES" --hosts "$HOSTS" --mo-count "$MO_COUNT" \
        --dir "$WORK" 2>"$WORK/pipeline.err" | tail -1) || {
        echo "  dozor-pipeline-bench failed: $(tail -1 "$WORK/pipeline.err")" >&2
        return 1
    }
    local rate cpu us secs
    rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$line")
    cpu=$(sed -n 's/.* cpu_secs=\([0-9.]*\).*/\1/p' <<<"$line")
    us=$(sed -n 's/.* us_per_msg=\([0-9.]*\).*/\1/p' <<<"$line")
    secs=$(sed -n 's/.* secs=\([0-9.]*\) .*/\1/p' <<<"$line")
    echo "== pipeline run $run: $MESSAGES in $secs s (load avg $load)"
    echo "   collector pipeline without a broker: $rate msgs/s; CPU $cpu s = $us µs per message ($(calc "%.0f" "$cpu / $secs * 100") %)"
    printf '| %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s |\n' \
        "collector pipeline, no broker" "$run" "$rate" "$rate" "$cpu" "$(calc "%.0f" "$cpu / $secs * 100")" \
        "none" "-" "-" "pre-generated" "$load" >>"$RESULTS"
}

# --- main ----------------------------------------------------------------------------------

echo "dozor ingest benchmark: $MESSAGES heartbeats of $HOSTS hosts in $MO_COUNT МО over $CONNECTIONS connections, QoS $QOS, rate ${RATE} (0: unlimited), $RUNS runs"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -sr), mosquitto $(mosquitto -h 2>&1 | sed -n 's/^mosquitto version //p'), $(date -u +%FT%TZ)"
for run in $(seq "$RUNS"); do
    E2E=()
    run_load=$(cut -d' ' -f1-3 /proc/loadavg)
    for cfg in $CONFIGS; do
        case $cfg in
        embedded | embedded-baseline | mosquitto | before) run_collector "$cfg" "$run" ;;
        sub) run_sub "$run" ;;
        pipeline) run_pipeline "$run" ;;
        *) echo "unknown config $cfg" >&2; exit 2 ;;
        esac
    done
    if [[ -n ${E2E[sub]:-} ]]; then
        echo "-- run $run ratios to mosquitto_sub (${E2E[sub]} msgs/s) in this run: collector+mosquitto $(ratio mosquitto) (${E2E[mosquitto]:--} msgs/s), collector+embedded $(ratio embedded) (${E2E[embedded]:--} msgs/s)$([[ -z ${E2E[embedded-baseline]:-} ]] || echo ", baseline collector+embedded $(ratio embedded-baseline) (${E2E[embedded-baseline]} msgs/s)")$([[ -z ${E2E[before]:-} ]] || echo ", before+mosquitto $(ratio before) (${E2E[before]} msgs/s)")"
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$run" "$run_load" "${E2E[sub]:--}" \
        "${E2E[mosquitto]:--}" "$(ratio mosquitto)" "${E2E[embedded]:--}" "$(ratio embedded)" \
        "${E2E[before]:--}" "$(ratio before)" >>"$RATIOS"
done
echo
cat "$RESULTS"
echo
echo "End-to-end rates and their ratio to mosquitto_sub's in the same run (\"lost N\": not all"
echo "$MESSAGES were accepted):"
cat "$RATIOS"
if ((${#DROPS[@]})); then
    echo
    echo "Embedded broker, per run (lost = sent - accepted - duplicates - rejected):"
    printf '  %s\n' "${DROPS[@]}"
fi
