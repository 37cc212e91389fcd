# Sourced by bench scripts: writes $WORK/start.sh and $WORK/restart.sh, the scripts a load
# generator scenario calls to start and restart the collector under test.
#
# write_collector_ctl COLLECTOR_BIN HTTP_PORT RUST_LOG DEFAULT_SIGNAL
#   start.sh    starts the collector (config $WORK/collector.toml, data $WORK/data) in its own
#               session, records its PID in $WORK/collector.pid, waits until it listens and
#               prints the PID; each start's stdout goes to $WORK/collector.N.stdout, stderr to
#               $WORK/collector.stderr.
#   restart.sh [SIGNAL]  stops the running collector with SIGNAL (default DEFAULT_SIGNAL),
#               waits up to 30 s for it to exit, and runs start.sh.
write_collector_ctl() {
    local bin=$1 http_port=$2 rust_log=$3 default_signal=$4
    cat >"$WORK/start.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
n=\$(ls "$WORK" | grep -c '^collector[.][0-9]*[.]stdout' || true)
out="$WORK/collector.\$n.stdout"
DOZOR_HTTP_PUBLIC_READ=true RUST_LOG=$rust_log setsid "$bin" --config "$WORK/collector.toml" \\
    --data-dir "$WORK/data" --http-listen 127.0.0.1:$http_port >"\$out" 2>>"$WORK/collector.stderr" </dev/null &
pid=\$!
echo \$pid >"$WORK/collector.pid"
for _ in \$(seq 1200); do
    grep -q '^dozor-collector listening' "\$out" 2>/dev/null && { echo \$pid; exit 0; }
    kill -0 \$pid 2>/dev/null || { tail -5 "$WORK/collector.stderr" >&2; exit 1; }
    sleep 0.05
done
echo "collector did not start" >&2
exit 1
EOF
    cat >"$WORK/restart.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
sig=\${1:-$default_signal}
old=\$(cat "$WORK/collector.pid")
kill -\$sig \$old
for _ in \$(seq 600); do kill -0 \$old 2>/dev/null || break; sleep 0.05; done
kill -0 \$old 2>/dev/null && { echo "collector \$old did not stop in 30 s" >&2; exit 1; }
echo "# collector \$old stopped by SIG\$sig, load \$(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec bash "$WORK/start.sh"
EOF
}
