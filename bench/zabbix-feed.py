#!/usr/bin/env python3
"""Feeds a Zabbix server's trapper the values of a simulated fleet, paced like dozor-loadgen.

Used by bench/vs-zabbix.sh. Every second it takes the next RATE hosts round-robin (host names
`h-000000`…), writes one heartbeat's worth of values per host (the five trapper items the
bench creates: dozor.hb, dozor.cpu, dozor.mem.used, dozor.uptime, dozor.disk.used) to a file
and hands the file to `zabbix_sender -T -N -i` (which sends it in batches of 250 values per
connection). Each tick's values carry the tick's time to the nanosecond: two ticks never share
a (clock, ns), so a late tick cannot make Zabbix skip values as duplicates of its history's
primary key (itemid, clock, ns). Senders run concurrently when one takes longer than a second, so the offered
rate holds. The last line of stdout is machine-readable:
`zabbix-feed hbs=N values=N processed=N failed=N secs=S senders=K late_ticks=L max_running=M`
(max_running: the most senders running at once; well above 1 means the senders, not the
server, set the pace).
"""
import argparse
import os
import re
import subprocess
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--rate", type=int, required=True, help="heartbeats per second")
    p.add_argument("--secs", type=int, required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()

    start = time.time()
    nxt = 0
    seq = [0] * a.hosts
    running = []
    processed = failed = hbs = values = senders = late = max_running = 0
    pat = re.compile(r"processed: (\d+); failed: (\d+)")

    def reap(block):
        nonlocal processed, failed
        keep = []
        for proc, path in running:
            if block or proc.poll() is not None:
                out, _ = proc.communicate()
                for m in pat.finditer(out):
                    processed += int(m.group(1))
                    failed += int(m.group(2))
                os.unlink(path)
            else:
                keep.append((proc, path))
        running[:] = keep

    for tick in range(a.secs):
        due = start + tick
        now = time.time()
        if now < due:
            time.sleep(due - now)
        elif now - due > 0.5:
            late += 1
        ts, ns = divmod(time.time_ns(), 1_000_000_000)
        lines = []
        for _ in range(a.rate):
            i = nxt
            nxt = (nxt + 1) % a.hosts
            seq[i] += 1
            s = seq[i]
            r = (i * 2654435761 + (s // 8) * 40503) & 0xFFFFFFFF
            h = f"h-{i:06d}"
            t = f"{ts} {ns}"
            lines.append(f"{h} dozor.hb {t} {s}\n")
            lines.append(f"{h} dozor.cpu {t} {(r % 1000) / 10:.1f}\n")
            lines.append(f"{h} dozor.mem.used {t} {(1 + r % 30) << 28}\n")
            lines.append(f"{h} dozor.uptime {t} {3600 + i * 7 + s * 30}\n")
            lines.append(f"{h} dozor.disk.used {t} {(10 + r % 85) << 30}\n")
        hbs += a.rate
        values += len(lines)
        path = os.path.join(a.dir, f"feed-{tick}.txt")
        with open(path, "w") as f:
            f.writelines(lines)
        proc = subprocess.Popen(
            ["zabbix_sender", "-z", "127.0.0.1", "-p", str(a.port), "-T", "-N", "-i", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        senders += 1
        running.append((proc, path))
        max_running = max(max_running, len(running))
        reap(False)
    reap(True)
    secs = time.time() - start
    print(
        f"zabbix-feed hbs={hbs} values={values} processed={processed} failed={failed} "
        f"secs={secs:.3f} senders={senders} late_ticks={late} max_running={max_running}",
        flush=True,
    )


if __name__ == "__main__":
    main()
