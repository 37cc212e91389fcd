#!/usr/bin/env bash
# `dozor-pipeline-bench` with the CPU of its store thread: runs BIN with the given arguments and
# prints the bench's last line plus `store_cpu_secs`, `store_us_per_msg` (the thread named
# "store", sampled from /proc/PID/task/*/stat every 20 ms: the last sample before the process
# exits, so it may miss the last ≤ 20 ms) and the load average at the end.
# Usage: bench/pipeline-threads.sh BIN --messages 400000 --dir /var/tmp [--journal-apply-ms N …]
set -euo pipefail
bin=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" "$@" >"$out" &
pid=$!
last=0
hz=$(getconf CLK_TCK)
while [[ -e /proc/$pid && $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]; do
    for t in /proc/"$pid"/task/*; do
        if [[ $(cat "$t/comm" 2>/dev/null) == store ]]; then
            v=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}')
            [[ -n $v ]] && last=$v
        fi
    done
    sleep 0.02
done
wait "$pid"
line=$(tail -1 "$out")
acc=$(sed 's/.*accepted=\([0-9]*\).*/\1/' <<<"$line")
echo "$line store_cpu_secs=$(awk "BEGIN {printf \"%.2f\", $last / $hz}") store_us_per_msg=$(awk "BEGIN {printf \"%.2f\", $last / $hz * 1e6 / $acc}") load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
