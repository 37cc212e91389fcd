#!/usr/bin/env bash
# dozor beside Zabbix server 6.0 on the same box and the same load (issue 15; see
# docs/benchmarks.md, "Side by side with Zabbix server 6.0").
#
# For each fleet size in HOSTS_LIST, in one run and one after the other (never at once):
#   zabbix  Debian's zabbix-server-pgsql 6.0 with Debian's PostgreSQL 15, both started here by
#           hand as their own users (no systemd) with their data and configs in a temp dir and
#           their packaged defaults otherwise, but for Zabbix's cache sizes (see below). The
#           schema is the one the package ships (/usr/share/zabbix-server-pgsql). The fleet is created by SQL (Zabbix 6.0 has its API
#           in the PHP frontend only, which is not installed): per host five trapper items
#           (dozor.hb, dozor.cpu, dozor.mem.used, dozor.uptime, dozor.disk.used) and a trigger
#           `nodata(/host/dozor.hb,90s)=1`; the stock action "Report problems to Zabbix
#           administrators" is enabled and sends to Admin through a script media type.
#           bench/zabbix-feed.py feeds the values with `zabbix_sender` batches.
#   dozor   the release dozor-collector with its embedded broker and default alert rules, a
#           webhook channel to a receiver started here; dozor-loadgen publishes the heartbeats.
# Both get the same load: RATE = hosts × MULT / 30 heartbeats/s for DURATION seconds (MULT 1:
# every host once per 30 s, the agent's default interval); one heartbeat = 5 Zabbix values.
#
# A server's death (DEATH=1): two watched servers report at the 30 s interval from the start of
# the load — dozor: real dozor-agents `--role server` (`srv-kill`, `srv-freeze`); Zabbix: host
# `srv-watch` fed by zabbix_sender every 30 s. At T_KILL s: `srv-kill` gets kill -9 (the OS
# closes its socket: a crashed agent process), `srv-freeze` SIGSTOP (the socket stays open, as
# in a power cut or a hung host), and `srv-watch`'s sender stops (for a trapper or an active
# agent both are the same silence). Printed: seconds from that instant to the alert (dozor:
# the webhook request; Zabbix: the problem event and the alert script's run).
#
# Measured per peer over the load window: CPU from a cpuacct cgroup per part (ns, includes
# short-lived children), RSS and PSS summed over the cgroup's processes every 5 s (PSS: shared
# memory such as PostgreSQL's shared buffers and Zabbix's caches counted once), values/s
# offered, accepted and stored.
#
# Environment: HOSTS_LIST ("1000 10000"), MULT (1), MULT_LIST (MULT; e.g. "1 10": each fleet
# at each rate), DURATION (240), DEATH (1), T_KILL (75), PEERS ("zabbix dozor"), the Zabbix
# cache sizes below (ZBX_CACHE, ZBX_TREND_CACHE, ZBX_HISTORY_INDEX_CACHE, ZBX_HISTORY_CACHE,
# ZBX_VALUE_CACHE; ZBX_EXTRA for more "Key=value" lines), BUILD (1), KEEP (0; 1 keeps the
# temp dir with the servers' logs), WAIT_BUILD (0), CARGO_TARGET_DIR (./target). Needs root (users, cgroups); installs zabbix-server-pgsql,
# zabbix-sender and postgresql with apt-get if missing.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD
HOSTS_LIST=${HOSTS_LIST:-"1000 10000"}
MULT=${MULT:-1}
DURATION=${DURATION:-240}
DEATH=${DEATH:-1}
T_KILL=${T_KILL:-75}
BUILD=${BUILD:-1}
PEERS=${PEERS:-"zabbix dozor"}
# Zabbix's shared caches, sized as an admin would for 10,000 hosts × 5 items (50,005 items) at
# 1,700-17,000 values/s; each one set empty ("") restores the packaged default (in brackets).
# See docs/benchmarks.md for why each one:
#   CacheSize (32M) runs out at 10,000 hosts: the configuration syncer exits with "out of
#     memory ... please increase CacheSize";
#   TrendCacheSize (4M) holds ~41,000 items' hourly trends: the first history syncer to add
#     one more exits with "please increase TrendCacheSize" and takes the server down;
#   HistoryIndexCacheSize (4M): Zabbix's manual asks ~100 bytes per item, 5 MB for 50,005;
#   HistoryCacheSize (16M): a few seconds of values at the stress rate while a syncer waits;
#   ValueCacheSize (8M): nodata(…,90s) keeps 90 s of dozor.hb per host cached, 300,000 values
#     at MULT=10: with 8M the server logs "value cache is fully used: please increase
#     ValueCacheSize" and goes to its low-memory mode (reads the database instead).
ZBX_CACHE=${ZBX_CACHE-128M}
ZBX_TREND_CACHE=${ZBX_TREND_CACHE-16M}
ZBX_HISTORY_INDEX_CACHE=${ZBX_HISTORY_INDEX_CACHE-16M}
ZBX_HISTORY_CACHE=${ZBX_HISTORY_CACHE-64M}
ZBX_VALUE_CACHE=${ZBX_VALUE_CACHE-32M}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
VPH=5 # Zabbix values per heartbeat
PGBIN=/usr/lib/postgresql/15/bin
ZSHARE=/usr/share/zabbix-server-pgsql

if ! command -v zabbix_server >/dev/null && [[ ! -x /usr/sbin/zabbix_server ]] ||
    ! command -v zabbix_sender >/dev/null || [[ ! -x $PGBIN/postgres ]]; then
    echo "+ apt-get install -y zabbix-server-pgsql zabbix-sender postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y zabbix-server-pgsql zabbix-sender postgresql >/dev/null
fi
export PATH=$PATH:/usr/sbin
if [[ $BUILD == 1 ]]; then
    echo "+ cargo build --release -p dozor-collector -p dozor-tests -p dozor-agent" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests -p dozor-agent
fi
BIN=$TARGET_DIR/release
# WAIT_BUILD=1: wait (up to 30 min) for binaries another cargo build is still making before
# the first dozor run, so the Zabbix runs can start meanwhile.
check_bins() {
    local b i
    for b in dozor-collector dozor-loadgen dozor-agent; do
        for i in $(seq 1800); do
            [[ -x $BIN/$b || ${WAIT_BUILD:-0} != 1 ]] && break
            sleep 1
        done
        [[ -x $BIN/$b ]] || { echo "$BIN/$b not built" >&2; exit 1; }
    done
    sleep 2
}
[[ ${WAIT_BUILD:-0} == 1 || $PEERS != *dozor* ]] || check_bins

W=$(mktemp -d /var/tmp/dozor-vs-zabbix.XXXXXX)
chmod 755 "$W"
CG=/sys/fs/cgroup/cpuacct
CGS=()
PIDS=()
cleanup() {
    local g p
    exec 2>/dev/null # no "Killed" notices of our own background jobs
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    # Every process left in this run's cgroups was started by this script.
    for g in "${CGS[@]}"; do
        for p in $(cat "$g/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    done
    sleep 1
    for g in "${CGS[@]}"; do rmdir "$g" 2>/dev/null || true; done
    [[ ${KEEP:-0} == 1 ]] && echo "kept $W" || rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM

now() { date +%s.%N; }
calc() { awk "BEGIN {printf \"$1\", ($2)}"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
new_cg() { echo "$CG/dozor-vz-$$-$1"; } # created in main

# Starts a command in a cgroup (as a user); its pid (the wrapper's, which execs) in $LAUNCHED.
launch() { # cgroup, user, log, command...
    local g=$1 user=$2 log=$3
    shift 3
    if [[ $user == root ]]; then
        sh -c 'echo $$ > "$0"; exec "$@"' "$g/cgroup.procs" "$@" >"$log" 2>&1 &
    else
        sh -c 'echo $$ > "$0"; u=$1; shift; exec runuser -u "$u" -- "$@"' "$g/cgroup.procs" "$user" "$@" >"$log" 2>&1 &
    fi
    LAUNCHED=$!
    PIDS+=("$LAUNCHED")
}
cg_ns() { cat "$1/cpuacct.usage"; }
# "pss_kB rss_kB processes" of a cgroup.
cg_mem() {
    local p
    for p in $(cat "$1/cgroup.procs"); do
        cat "/proc/$p/smaps_rollup" 2>/dev/null
    done | awk '/^Rss:/ {r += $2; n++} /^Pss:/ {s += $2} END {printf "%d %d %d\n", s, r, n}'
}
# Samples cgroups every 5 s into $W/mem-<name> until $W/stop-sampling exists.
sampler() { # names...
    rm -f "$W/stop-sampling"
    local n
    for n in "$@"; do : >"$W/mem-$n"; done
    (
        while [[ ! -e $W/stop-sampling ]]; do
            for n in "$@"; do cg_mem "$CG/dozor-vz-$$-$n" >>"$W/mem-$n"; done
            sleep 5
        done
    ) &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
}
stop_sampler() {
    touch "$W/stop-sampling"
    wait "$SAMPLER" 2>/dev/null || true
}
# "pss_avg pss_max rss_avg rss_max procs_max" in MiB from the samples of a name.
mem_stats() {
    awk '{ps += $1; if ($1 > pm) pm = $1; rs += $2; if ($2 > rm) rm = $2; if ($3 > nm) nm = $3; n++}
        END {if (n == 0) n = 1; printf "%.1f %.1f %.1f %.1f %d\n", ps/n/1024, pm/1024, rs/n/1024, rm/1024, nm}' "$W/mem-$1"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# A fleet's label in the tables: its size, and the rate when it is not the default.
fleet() { [[ $MULT == 1 ]] && echo "$1" || echo "$1, ×$MULT (every $(calc "%g" "30 / $MULT") s)"; }

RESULTS=$W/results
DEATHS=$W/deaths
: >"$RESULTS"
: >"$DEATHS"

# --- Zabbix ------------------------------------------------------------------------------------

PG_PORT=
PG_DIR=$W/pg
# One cluster for the run: the packaged schema and data are loaded once into a template
# database, each fleet gets a copy; the server is started for each fleet and stopped after.
init_postgres() {
    mkdir -p "$PG_DIR"
    chown postgres: "$PG_DIR"
    PG_PORT=$(free_port)
    runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 >/dev/null
    start_postgres
    psql -X -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -c "create role zabbix login" \
        -c "create database zabbix_tpl owner zabbix encoding 'UTF8' template template0" >/dev/null
    zcat "$ZSHARE/schema.sql.gz" | psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U zabbix zabbix_tpl -1 >/dev/null
    zcat "$ZSHARE/images.sql.gz" "$ZSHARE/data.sql.gz" |
        psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U zabbix zabbix_tpl >/dev/null
    stop_postgres
}
start_postgres() {
    local g
    g=$(new_cg pg)
    launch "$g" postgres "$W/pg.log" "$PGBIN/postgres" -D "$PG_DIR/data" -k "$PG_DIR" -p "$PG_PORT" \
        -c listen_addresses=
    local i
    for i in $(seq 300); do
        "$PGBIN/pg_isready" -q -h "$PG_DIR" -p "$PG_PORT" && return 0
        sleep 0.1
    done
    cat "$W/pg.log" >&2
    return 1
}
stop_postgres() {
    kill -TERM "$(head -1 "$PG_DIR/data/postmaster.pid")" 2>/dev/null || true
    local i
    for i in $(seq 150); do [[ -n $(cat "$CG/dozor-vz-$$-pg/cgroup.procs") ]] || return 0; sleep 0.2; done
    echo "PostgreSQL did not stop" >&2
    return 1
}
psqlz() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U zabbix zabbix "$@"; }

create_zabbix_db() { # hosts
    local n=$1
    psql -X -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -c "drop database if exists zabbix" \
        -c "create database zabbix owner zabbix template zabbix_tpl" >/dev/null
    # Host i < n is h-<i> of the fleet; host n is srv-watch. Items 1000000 + 5 i + k,
    # trigger and function 300000 + i on dozor.hb.
    psqlz -1 >/dev/null <<EOF
UPDATE hosts SET status = 1 WHERE hostid = 10084; -- the stock "Zabbix server" host polls an agent we do not run
INSERT INTO hosts (hostid, host, name, status, name_upper)
  SELECT 200000 + i, h, h, 0, upper(h)
  FROM (SELECT i, CASE WHEN i = $n THEN 'srv-watch' ELSE 'h-' || lpad(i::text, 6, '0') END AS h
        FROM generate_series(0, $n) i) s;
INSERT INTO hosts_groups (hostgroupid, hostid, groupid) SELECT 200000 + i, 200000 + i, 2 FROM generate_series(0, $n) i;
INSERT INTO items (itemid, type, hostid, name, key_, delay, history, trends, status, value_type, name_upper)
  SELECT 1000000 + 5 * i + k, 2, 200000 + i, nm, key, '0', '7d', '365d', 0, vt, upper(nm)
  FROM generate_series(0, $n) i,
       (VALUES (0, 'dozor.hb', 'Heartbeat', 3), (1, 'dozor.cpu', 'CPU %', 0),
               (2, 'dozor.mem.used', 'Memory used', 3), (3, 'dozor.uptime', 'Uptime', 3),
               (4, 'dozor.disk.used', 'Disk used', 3)) v(k, key, nm, vt);
INSERT INTO item_rtdata (itemid) SELECT itemid FROM items WHERE itemid >= 1000000;
INSERT INTO triggers (triggerid, expression, description, priority, event_name)
  SELECT 300000 + i, '{' || (300000 + i) || '}=1', 'No heartbeat for 90 s', 4, '' FROM generate_series(0, $n) i;
INSERT INTO functions (functionid, itemid, triggerid, name, parameter)
  SELECT 300000 + i, 1000000 + 5 * i, 300000 + i, 'nodata', '\$,90s' FROM generate_series(0, $n) i;
INSERT INTO media_type (mediatypeid, type, name, exec_path, exec_params, status, content_type)
  VALUES (100, 1, 'dozor-bench', 'dozor-bench-alert.sh', E'{ALERT.SENDTO}\n{ALERT.SUBJECT}\n', 0, 0);
INSERT INTO media (mediaid, userid, mediatypeid, sendto, active, severity, period)
  VALUES (100, 1, 100, 'bench', 0, 63, '1-7,00:00-24:00');
UPDATE opmessage SET default_msg = 0, subject = '{HOST.HOST}: {EVENT.NAME}', message = '{HOST.HOST}', mediatypeid = 100
  WHERE operationid = 3;
UPDATE actions SET status = 0 WHERE actionid = 3; -- "Report problems to Zabbix administrators"
EOF
}

ZBX_PORT=
start_zabbix() {
    local d=$W/zbx
    mkdir -p "$d/alertscripts"
    cat >"$d/alertscripts/dozor-bench-alert.sh" <<EOF
#!/bin/sh
echo "\$(date +%s.%N) \$2" >> $d/alerts.log
EOF
    chmod 755 "$d/alertscripts/dozor-bench-alert.sh"
    chown -R zabbix: "$d"
    # zabbix_server takes ListenPort 1024..32767 only.
    ZBX_PORT=$(python3 -c 'import socket,random
while True:
    p = random.randint(20000, 32000); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass')
    # Packaged defaults (processes, caches) except where the files and the database live, and
    # the caches above.
    cat >"$d/zabbix_server.conf" <<EOF
ListenIP=127.0.0.1
ListenPort=$ZBX_PORT
LogFile=$d/zabbix_server.log
LogFileSize=0
PidFile=$d/zabbix_server.pid
SocketDir=$d
DBHost=$PG_DIR
DBPort=$PG_PORT
DBName=zabbix
DBUser=zabbix
AlertScriptsPath=$d/alertscripts
EOF
    local kv
    for kv in CacheSize=$ZBX_CACHE TrendCacheSize=$ZBX_TREND_CACHE HistoryIndexCacheSize=$ZBX_HISTORY_INDEX_CACHE \
        HistoryCacheSize=$ZBX_HISTORY_CACHE ValueCacheSize=$ZBX_VALUE_CACHE; do
        [[ -n ${kv#*=} ]] && echo "$kv" >>"$d/zabbix_server.conf"
    done
    # ZBX_EXTRA: more "Key=value" lines, space-separated (e.g. "StartTrappers=20").
    for kv in ${ZBX_EXTRA:-}; do echo "$kv" >>"$d/zabbix_server.conf"; done
    echo "   zabbix_server.conf beyond files and database: $(grep -E '^(Cache|Trend|History|Value|Start)' "$d/zabbix_server.conf" | tr '\n' ' ')"
    local g
    g=$(new_cg zbx)
    launch "$g" zabbix "$d/stdout" zabbix_server -f -c "$d/zabbix_server.conf"
    wait_port "$ZBX_PORT"
    # The configuration syncer fills its cache after the trappers listen.
    sleep 10
    kill -0 "$(cat "$d/zabbix_server.pid" 2>/dev/null)" 2>/dev/null || {
        tail -5 "$d/zabbix_server.log" >&2
        echo "zabbix_server exited" >&2
        return 1
    }
}

run_zabbix() { # hosts
    local n=$1 rate=$(($1 * MULT / 30))
    ((rate > 0)) || rate=1
    echo "== zabbix, $n hosts: setting up the fleet (load avg $(loadavg))"
    local t_setup
    t_setup=$(now)
    start_postgres
    create_zabbix_db "$n"
    start_zabbix
    echo "   set up in $(calc "%.0f" "$(now) - $t_setup") s; feeding $rate heartbeats/s = $((rate * VPH)) values/s for $DURATION s"
    local load0 c_zbx0 c_pg0 t0 t1
    load0=$(loadavg)
    sampler zbx pg
    c_zbx0=$(cg_ns "$CG/dozor-vz-$$-zbx")
    c_pg0=$(cg_ns "$CG/dozor-vz-$$-pg")
    t0=$(now)
    mkdir -p "$W/feed"
    python3 "$ROOT/bench/zabbix-feed.py" --port "$ZBX_PORT" --hosts "$n" --rate "$rate" --secs "$DURATION" \
        --dir "$W/feed" >"$W/feed.out" 2>"$W/feed.err" &
    local feed=$!
    PIDS+=("$feed")
    local watch= t_kill=
    if [[ $DEATH == 1 ]]; then
        # srv-watch: one heartbeat's values every 30 s, from t0 until T_KILL.
        (
            k=0
            while :; do
                ts=$(date +%s)
                printf 'srv-watch dozor.hb %s %s\nsrv-watch dozor.cpu %s 1.0\nsrv-watch dozor.mem.used %s 1\nsrv-watch dozor.uptime %s 1\nsrv-watch dozor.disk.used %s 1\n' \
                    "$ts" "$k" "$ts" "$ts" "$ts" "$ts" >"$W/watch.txt"
                zabbix_sender -z 127.0.0.1 -p "$ZBX_PORT" -T -i "$W/watch.txt" >>"$W/watch.log" 2>&1 || true
                k=$((k + 1))
                sleep "$(calc "%.3f" "$t0 + 30 * $k - $(now)")"
            done
        ) &
        watch=$!
        disown "$watch" # no "Killed" notice when it is stopped
        PIDS+=("$watch")
        sleep "$(calc "%.3f" "$t0 + $T_KILL - $(now)")"
        kill -KILL "$watch" 2>/dev/null || true
        t_kill=$(now)
    fi
    wait "$feed" || echo "   zabbix-feed failed: $(tail -2 "$W/feed.err")" >&2
    t1=$(now)
    local c_zbx1 c_pg1
    c_zbx1=$(cg_ns "$CG/dozor-vz-$$-zbx")
    c_pg1=$(cg_ns "$CG/dozor-vz-$$-pg")
    stop_sampler
    local load1
    load1=$(loadavg)
    # Did the server hold? If not, say why (its log names the cache or the limit it hit).
    local zlog=$W/zbx/zabbix_server.log alive=yes
    if ! kill -0 "$(cat "$W/zbx/zabbix_server.pid" 2>/dev/null)" 2>/dev/null; then
        alive=no
        echo "   ZABBIX_SERVER EXITED during the window; its log says:"
        grep -m4 -E 'please increase|out of memory|One child process died|cannot|too many' "$zlog" | sed 's/^/     /'
    else
        # Cache use at the end of the window, as Zabbix reports it (diaginfo goes to its log).
        runuser -u zabbix -- zabbix_server -c "$W/zbx/zabbix_server.conf" -R diaginfo >/dev/null 2>&1 || true
        sleep 3
        echo "   caches at the end of the window (zabbix_server -R diaginfo):"
        awk '
            { sub(/^ *[0-9]+:[0-9]+:[0-9.]+ /, "") }
            /^== history cache diagnostic/ { sec = "history cache"; part = "data"; next }
            /^== value cache diagnostic/ { sec = "value cache"; part = "data"; next }
            /^== preprocessing diagnostic/ { sec = "preprocessing"; next }
            /^== / { sec = ""; next }
            sec != "" && /^(items|values):/ { out[sec] = out[sec] " " $0 }
            sec == "history cache" && /^memory\.index:/ { part = "index" }
            sec != "" && /^ *size: free:/ {
                split($0, a, /free:| used:/); f = a[2] + 0; u = a[3] + 0
                out[sec] = out[sec] sprintf(", %s used %.1f of %.1f MiB", sec == "history cache" ? part : "memory", u / 1048576, (u + f) / 1048576)
            }
            END { for (s in out) printf "     %s:%s\n", s, out[s] }
        ' "$zlog"
    fi
    echo "   warnings in the server's log: $(grep -c -i -E 'warning|please increase|cannot|failed' "$zlog") ($(grep -i -E 'warning|please increase|cannot|failed' "$zlog" | sed 's/^[ 0-9]*:[0-9]*:[0-9.]* //' | sort | uniq -c | sort -rn | head -3 | tr -s ' ' | tr '\n' ';'))"
    # Values stored by the end of the window, then after the history syncers caught up.
    local r="itemid BETWEEN 1000000 AND $((1000000 + 5 * n - 1))"
    local q="SELECT (SELECT count(*) FROM history WHERE $r) + (SELECT count(*) FROM history_uint WHERE $r)"
    local stored_end stored prev i
    stored_end=$(psqlz -Atc "$q")
    stored=$stored_end
    for i in $(seq 12); do
        sleep 5
        prev=$stored
        stored=$(psqlz -Atc "$q")
        ((stored == prev)) && break
    done
    if [[ $DEATH == 1 ]]; then
        # Wait for the alert (at most T_KILL + 180 s after the start of the load).
        local deadline
        deadline=$(calc "%.0f" "$t0 + $T_KILL + 180")
        while [[ ! -s $W/zbx/alerts.log ]] && (($(date +%s) < deadline)); do sleep 1; done
        local ev al
        ev=$(psqlz -Atc "SELECT clock + ns / 1e9 FROM events WHERE source = 0 AND object = 0 AND objectid = 300000 + $n AND value = 1 ORDER BY eventid LIMIT 1")
        al=$(awk '/srv-watch/ {print $1; exit}' "$W/zbx/alerts.log" 2>/dev/null || true)
        local last_hb
        last_hb=$(psqlz -Atc "SELECT max(clock) FROM history_uint WHERE itemid = 1000000 + 5 * $n")
        echo "   death: srv-watch silent at +$(calc "%.1f" "$t_kill - $t0") s (last value at +$(calc "%.1f" "${last_hb:-0} - $t0") s); problem event after $([[ -n $ev ]] && calc "%.1f" "$ev - $t_kill" || echo "none") s, alert script ran after $([[ -n $al ]] && calc "%.1f" "$al - $t_kill" || echo "none") s"
        printf '| Zabbix 6.0 (nodata 90 s, action → script) | %s | silence (sender stopped) | %s | %s |\n' "$(fleet "$n")" \
            "$([[ -n $ev ]] && calc "%.1f" "$ev - $t_kill" || echo "none")" \
            "$([[ -n $al ]] && calc "%.1f" "$al - $t_kill" || echo "none")" >>"$DEATHS"
    fi
    local wall cz cp vals processed failed lcpu_s
    wall=$(calc "%.3f" "$t1 - $t0")
    cz=$(calc "%.2f" "($c_zbx1 - $c_zbx0) / 1e9")
    cp=$(calc "%.2f" "($c_pg1 - $c_pg0) / 1e9")
    vals=$(sed -nE 's/.* values=([0-9]+).*/\1/p' "$W/feed.out")
    processed=$(sed -nE 's/.* processed=([0-9]+).*/\1/p' "$W/feed.out")
    failed=$(sed -nE 's/.* failed=([0-9]+).*/\1/p' "$W/feed.out")
    read -r zpa zpm zra zrm znp <<<"$(mem_stats zbx)"
    read -r ppa ppm pra prm pnp <<<"$(mem_stats pg)"
    echo "   $(tail -1 "$W/feed.out")"
    echo "   values: offered $vals ($(calc "%.0f" "$vals / $wall")/s), accepted by the trapper $processed, failed ${failed:-?}; stored in history $stored_end by the end of the window ($(calc "%.0f" "$stored_end / $wall")/s), $stored after catching up"
    echo "   zabbix_server ($znp processes): CPU $cz s ($(calc "%.1f" "$cz / $wall * 100") %), PSS avg/max $zpa/$zpm MiB, RSS sum avg/max $zra/$zrm MiB"
    echo "   postgresql ($pnp processes): CPU $cp s ($(calc "%.1f" "$cp / $wall * 100") %), PSS avg/max $ppa/$ppm MiB, RSS sum avg/max $pra/$prm MiB"
    echo "   load avg at start $load0, at end $load1"
    printf '| Zabbix 6.0 + PostgreSQL 15 | %s | %s | %s | %s | %s | %s (%s %%) | %s | %s | %s | %s |\n' \
        "$(fleet "$n")" "$(calc "%.0f" "$vals / $wall")" "$(calc "%.0f" "$processed / $wall")" "$(calc "%.0f" "$stored_end / $wall")" \
        "$( ((stored == vals)) && echo yes || echo "no ($stored of $vals)")$([[ $alive == yes ]] || echo ", the server exited")" \
        "$(calc "%.1f" "$cz + $cp")" "$(calc "%.1f" "($cz + $cp) / $wall * 100")" \
        "$(calc "%.1f" "$cz / $wall * 100") / $(calc "%.1f" "$cp / $wall * 100")" \
        "$(calc "%.1f" "$zpa + $ppa") / $(calc "%.1f" "$zpm + $ppm")" \
        "$(calc "%.1f" "$zra + $pra")" "$load0 → $load1" >>"$RESULTS"
    # Stop: the server first (it flushes), then PostgreSQL.
    kill -TERM "$(cat "$W/zbx/zabbix_server.pid")" 2>/dev/null || true
    for i in $(seq 100); do [[ -n $(cat "$CG/dozor-vz-$$-zbx/cgroup.procs") ]] || break; sleep 0.2; done
    for p in $(cat "$CG/dozor-vz-$$-zbx/cgroup.procs"); do kill -KILL "$p" 2>/dev/null || true; done
    stop_postgres
    if [[ ${KEEP:-0} == 1 ]]; then mv "$W/zbx" "$W/zbx-$n-x$MULT"; else rm -rf "$W/zbx"; fi
    rm -rf "$W/feed"
}

# --- dozor -------------------------------------------------------------------------------------

HOOK_PORT=
start_hook() {
    HOOK_PORT=$(free_port)
    python3 - "$HOOK_PORT" "$W/hook.log" >/dev/null 2>&1 <<'EOF' &
import http.server, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8", "replace")
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {body}\n".replace("\n", " ") + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
    PIDS+=($!)
    wait_port "$HOOK_PORT"
}

run_dozor() { # hosts
    check_bins
    local n=$1 rate=$(($1 * MULT / 30))
    ((rate > 0)) || rate=1
    local d=$W/dozor
    mkdir -p "$d/data"
    : >"$W/hook.log"
    # Default alert rules; a webhook channel; the per-host flood limit raised (MULT > 2 sends
    # more than an agent at 30 s); open mode (the load generator does not sign).
    cat >"$d/collector.toml" <<EOF
[limits]
max_msgs_per_host_per_min = 1000000
[security]
mode = "open"
[[alerts.channel]]
type = "webhook"
name = "hook"
url = "http://127.0.0.1:$HOOK_PORT/hook"
EOF
    local mqtt http g
    mqtt=$(free_port)
    http=$(free_port)
    g=$(new_cg dozor)
    launch "$g" root "$d/collector.log" env DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=warn "$BIN/dozor-collector" \
        --config "$d/collector.toml" --data-dir "$d/data" --http-listen "127.0.0.1:$http" \
        --mqtt-listen "127.0.0.1:$mqtt"
    wait_port "$mqtt"
    wait_port "$http"
    echo "== dozor, $n hosts: publishing $rate heartbeats/s (= $((rate * VPH)) Zabbix-equivalent values/s) for $DURATION s"
    local load0 c0 t0 t1
    load0=$(loadavg)
    sampler dozor
    c0=$(cg_ns "$g")
    t0=$(now)
    "$BIN/dozor-loadgen" --mqtt-url "mqtt://127.0.0.1:$mqtt" --hosts "$n" --messages $((rate * DURATION)) \
        --rate "$rate" --timeout-secs $((DURATION + 120)) >"$W/loadgen.out" 2>"$W/loadgen.err" &
    local lg=$!
    PIDS+=("$lg")
    local kill_pid= freeze_pid= t_kill=
    if [[ $DEATH == 1 ]]; then
        local h
        for h in srv-kill srv-freeze; do
            "$BIN/dozor-agent" --mqtt-url "mqtt://127.0.0.1:$mqtt" --mo 1.2.643.5.1.13.13.12.2.27.9999 \
                --host-id "$h" --role server --site bench --data-dir "$d/$h" >"$d/$h.log" 2>&1 &
            PIDS+=($!)
            [[ $h == srv-kill ]] && kill_pid=$! || freeze_pid=$!
        done
        sleep "$(calc "%.3f" "$t0 + $T_KILL - $(now)")"
        kill -KILL "$kill_pid"
        kill -STOP "$freeze_pid"
        t_kill=$(now)
        wait "$kill_pid" 2>/dev/null || true
    fi
    wait "$lg" || echo "   loadgen failed: $(tail -2 "$W/loadgen.err")" >&2
    t1=$(now)
    local c1
    c1=$(cg_ns "$g")
    stop_sampler
    local load1
    load1=$(loadavg)
    local acc
    acc=$(curl -fsS --max-time 5 "http://127.0.0.1:$http/metrics" | awk '/^dozor_messages_accepted_total/ {a += $NF} END {printf "%d", a}')
    if [[ $DEATH == 1 ]]; then
        local deadline tk tf
        deadline=$(calc "%.0f" "$t0 + $T_KILL + 180")
        while { ! grep -q srv-kill "$W/hook.log" || ! grep -q srv-freeze "$W/hook.log"; } && (($(date +%s) < deadline)); do sleep 1; done
        tk=$(awk '/srv-kill/ {print $1; exit}' "$W/hook.log")
        tf=$(awk '/srv-freeze/ {print $1; exit}' "$W/hook.log")
        echo "   death at +$(calc "%.1f" "$t_kill - $t0") s: webhook for srv-kill (kill -9) after $([[ -n $tk ]] && calc "%.1f" "$tk - $t_kill" || echo "none") s, for srv-freeze (SIGSTOP) after $([[ -n $tf ]] && calc "%.1f" "$tf - $t_kill" || echo "none") s"
        printf '| dozor (default rules: server_lost, for 60 s; webhook) | %s | kill -9 of the agent | – | %s |\n' "$(fleet "$n")" \
            "$([[ -n $tk ]] && calc "%.1f" "$tk - $t_kill" || echo "none")" >>"$DEATHS"
        printf '| dozor (default rules: server_lost, for 60 s; webhook) | %s | SIGSTOP of the agent (power cut, hung host) | – | %s |\n' "$(fleet "$n")" \
            "$([[ -n $tf ]] && calc "%.1f" "$tf - $t_kill" || echo "none")" >>"$DEATHS"
        kill -KILL "$freeze_pid" 2>/dev/null || true
        wait "$freeze_pid" 2>/dev/null || true
    fi
    local wall c sent
    wall=$(calc "%.3f" "$t1 - $t0")
    c=$(calc "%.2f" "($c1 - $c0) / 1e9")
    sent=$((rate * DURATION))
    read -r pa pm ra rm np <<<"$(mem_stats dozor)"
    echo "   $(tail -1 "$W/loadgen.out")"
    echo "   heartbeats: offered $sent ($(calc "%.0f" "$sent / $wall")/s), accepted and stored $acc (incl. the watched agents' messages)"
    echo "   dozor-collector with its embedded broker: CPU $c s ($(calc "%.1f" "$c / $wall * 100") %), PSS avg/max $pa/$pm MiB, RSS avg/max $ra/$rm MiB"
    echo "   load avg at start $load0, at end $load1"
    printf '| dozor-collector (embedded broker) | %s | %s | %s | %s | %s | %s (%s %%) | – | %s / %s | %s | %s |\n' \
        "$(fleet "$n")" "$(calc "%.0f" "$sent * $VPH / $wall")" "$(calc "%.0f" "$acc * $VPH / $wall")" "$(calc "%.0f" "$acc * $VPH / $wall")" \
        "$( ((acc >= sent)) && echo yes || echo "no ($acc of $sent)")" "$c" "$(calc "%.1f" "$c / $wall * 100")" "$pa" "$pm" "$ra" "$load0 → $load1" >>"$RESULTS"
    for p in $(cat "$g/cgroup.procs"); do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 100); do [[ -n $(cat "$g/cgroup.procs") ]] || break; sleep 0.2; done
    rm -rf "$d"
}

# --- main --------------------------------------------------------------------------------------

MULT_LIST=${MULT_LIST:-$MULT}
echo "dozor vs Zabbix: fleets of $HOSTS_LIST hosts, $MULT_LIST heartbeat(s) per host per 30 s, $DURATION s each, one peer at a time"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -sr), $(zabbix_server -V | head -1), PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}'), $(date -u +%FT%TZ)"
for g in zbx pg dozor; do
    mkdir -p "$CG/dozor-vz-$$-$g"
    CGS+=("$CG/dozor-vz-$$-$g")
done
start_hook
if [[ $PEERS == *zabbix* ]]; then
    echo "+ PostgreSQL cluster and the packaged Zabbix schema (once)"
    t=$(now)
    init_postgres
    echo "  done in $(calc "%.0f" "$(now) - $t") s"
fi
for n in $HOSTS_LIST; do
    for MULT in $MULT_LIST; do
        for peer in $PEERS; do
            run_$peer "$n"
        done
    done
done
echo
echo "| stack | hosts | values/s offered | values/s accepted | values/s stored in the window | all stored | CPU s (% of one core) | CPU % server / PostgreSQL | PSS avg / max MiB | RSS sum avg MiB | load avg start → end |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
cat "$RESULTS"
if [[ $DEATH == 1 ]]; then
    echo
    echo "| stack | hosts | death | to the problem event, s | to the notification, s |"
    echo "|---|---|---|---|---|"
    cat "$DEATHS"
fi
