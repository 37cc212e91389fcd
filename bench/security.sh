#!/usr/bin/env bash
# Cost of trust (issue 9; results in docs/benchmarks.md, "Security"). In one run:
#   1. the collector's ingest pipeline per message, unsigned (open mode) vs signed and verified
#      (enrolled mode: MAC check at ingest, signed acks), and signed with the alert engine on its
#      own thread — dozor-pipeline-bench, RUNS each, alternating so that all see the same machine;
#   2. enrollment: N agents enrolling over HTTPS one after another, each on a new TLS connection
#      (as agents do): time per enrollment, p50/p90/max;
#   3. MQTT login through the embedded broker's gateway, plain vs TLS: N fresh connections each
#      (TCP (+TLS) + CONNECT with credentials checked + CONNACK), p50/p90.
# Everything listens on 127.0.0.1; every process started here is killed on exit.
#
# Environment: MESSAGES (500000), HOSTS (10000), RUNS (3), N (300), CARGO_TARGET_DIR (./target),
# BUILD (1; 0 to use the release binaries already built).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-500000}
HOSTS=${HOSTS:-10000}
RUNS=${RUNS:-3}
N=${N:-300}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BUILD=${BUILD:-1}
if [[ $BUILD == 1 ]]; then
    echo "+ cargo build --release -p dozor-collector -p dozor-tests" >&2
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p dozor-collector -p dozor-tests
fi
BIN=$TARGET_DIR/release
WORK=$(mktemp -d /tmp/dozor-secbench.XXXXXX)
cleanup() {
    local pids
    pids=$(jobs -p)
    [[ -n $pids ]] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "## 1. Pipeline per message: unsigned vs signed, alert engine off/on ($MESSAGES heartbeats of $HOSTS hosts)"
echo
echo "| mode | run | msgs/s | CPU µs per message |"
echo "|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for mode in unsigned signed signed+alerts; do
        flag=()
        [[ $mode == signed ]] && flag=(--signed)
        [[ $mode == signed+alerts ]] && flag=(--signed --alerts)
        line=$("$BIN/dozor-pipeline-bench" --messages "$MESSAGES" --hosts "$HOSTS" "${flag[@]}" 2>/dev/null | tail -1)
        rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$line")
        us=$(sed -n 's/.* us_per_msg=\([0-9.]*\).*/\1/p' <<<"$line")
        echo "| $mode | $run | $rate | $us |"
    done
done
echo

# A self-signed certificate for 127.0.0.1, for the HTTPS and MQTT TLS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

HTTP_PORT=
MQTT_PORT=
start_collector() { # $1: dir, $2: MQTT over TLS (0/1); sets HTTP_PORT, MQTT_PORT
    local dir=$1 tls=$2
    mkdir -p "$dir/data"
    {
        echo "[mqtt]"
        echo "listen = \"127.0.0.1:0\""
        if [[ $tls == 1 ]]; then
            echo "tls_cert_file = \"$WORK/cert.pem\""
            echo "tls_key_file = \"$WORK/key.pem\""
        fi
        echo "[http]"
        echo "listen = \"127.0.0.1:0\""
        echo "tls_cert_file = \"$WORK/cert.pem\""
        echo "tls_key_file = \"$WORK/key.pem\""
    } >"$dir/collector.toml"
    RUST_LOG=error "$BIN/dozor-collector" --config "$dir/collector.toml" --data-dir "$dir/data" \
        >"$dir/stdout" 2>"$dir/stderr" &
    local line=
    for _ in $(seq 600); do
        line=$(grep -m1 '^dozor-collector listening' "$dir/stdout" 2>/dev/null || true)
        [[ -n $line ]] && break
        sleep 0.05
    done
    [[ -n $line ]] || { echo "collector did not start: $(tail -3 "$dir/stderr")" >&2; exit 1; }
    HTTP_PORT=$(sed -n 's/.*http=[^ ]*:\([0-9]*\) .*/\1/p' <<<"$line")
    MQTT_PORT=$(sed -n 's/.*mqtt=[^ ]*:\([0-9]*\).*/\1/p' <<<"$line")
}

start_collector "$WORK/plain" 0
HTTP_PLAIN=$HTTP_PORT MQTT_PLAIN=$MQTT_PORT
TOKEN=$("$BIN/dozor-collector" --data-dir "$WORK/plain/data" token create --mo 1.2.643.5.1.13.13.12.2.27.1 2>/dev/null)
start_collector "$WORK/tls" 1
HTTP_TLS=$HTTP_PORT MQTT_TLS=$MQTT_PORT
TOKEN_TLS=$("$BIN/dozor-collector" --data-dir "$WORK/tls/data" token create --mo 1.2.643.5.1.13.13.12.2.27.1 2>/dev/null)

python3 - "$N" "$HTTP_PLAIN" "$MQTT_PLAIN" "$TOKEN" "$HTTP_TLS" "$MQTT_TLS" "$TOKEN_TLS" "$WORK/cert.pem" <<'EOF'
import json, socket, ssl, statistics, sys, time, http.client

n, http_plain, mqtt_plain, token, http_tls, mqtt_tls, token_tls, ca = sys.argv[1:]
n = int(n)
ctx = ssl.create_default_context(cafile=ca)

def enroll(port, tok, hint):
    c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    c.request("POST", "/api/v1/enroll", json.dumps({"token": tok, "host_hint": hint}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    assert r.status == 200, body
    return body

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]

def row(name, xs):
    ms = [x * 1000 for x in xs]
    print(f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 0.9):.2f} | {max(ms):.2f} |")

print("## 2. Enrollment over HTTPS (new TLS connection each) and 3. MQTT login through the gateway")
print()
print("| what | n | p50 ms | p90 ms | max ms |")
print("|---|---|---|---|---|")
times, ids = [], []
for i in range(n):
    t = time.perf_counter()
    ids.append(enroll(http_plain, token, f"bench-{i}"))
    times.append(time.perf_counter() - t)
row("enrollment (HTTPS, SQLite commit)", times)
ids_tls = [enroll(http_tls, token_tls, f"bench-{i}") for i in range(n)]

import hashlib, hmac
def password(secret_hex):
    return hmac.new(bytes.fromhex(secret_hex), b"dozor/v1 mqtt password", hashlib.sha256).hexdigest()

def s(b):
    return len(b).to_bytes(2, "big") + b

def connect_packet(ident):
    cid = f"dozor-{ident['mo']}-{ident['host']}".encode()
    user = ident["mqtt_username"].encode()
    pw = password(ident["secret"]).encode()
    var = s(b"MQTT") + bytes([4, 0b11000010]) + (30).to_bytes(2, "big")
    payload = s(cid) + s(user) + s(pw)
    rest = var + payload
    n, out = len(rest), b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            break
    return b"\x10" + out + rest

def login(port, ident, tls):
    t = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    if tls:
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(connect_packet(ident))
    ack = sock.recv(4)
    dt = time.perf_counter() - t
    assert ack[:2] == b"\x20\x02" and ack[3] == 0, ack
    sock.sendall(b"\xe0\x00")
    sock.close()
    return dt

row("MQTT login, plain (TCP + CONNECT + CONNACK)", [login(mqtt_plain, ids[i], False) for i in range(n)])
row("MQTT login, TLS (TCP + TLS 1.3 + CONNECT + CONNACK)", [login(mqtt_tls, ids_tls[i], True) for i in range(n)])
EOF
