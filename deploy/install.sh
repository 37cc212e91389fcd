#!/bin/sh
# Installs dozor-agent on a Linux host without the region's package repository: the .deb or
# .rpm, or the bare binary with the systemd unit; writes /etc/dozor/agent.toml from the flags,
# puts the enrollment token in place and (re)starts the service. Safe to run again: an
# enrolled agent keeps its identity (/var/lib/dozor-agent/identity.json) and its spool.
#
#   sudo deploy/install.sh --package dozor-agent_0.1.0-1_amd64.deb \
#       --collector mqtt.miac.local --mo 1.2.643.5.1.13.13.12.2.27.1234 \
#       --site "Поликлиника №1" --token-file /media/usb/mo-1234.token
#
# Options:
#   --package FILE        .deb or .rpm to install (default: the newest dozor-agent package
#                         next to this script or in target/packages/)
#   --binary FILE         install this dozor-agent binary and deploy/systemd's unit instead
#   --collector HOST[:PORT] | URL
#                         broker: HOST → mqtts://HOST:8883, or a full mqtt(s):// URL
#   --mo OID              ФРМО OID of the МО (the collector assigns it on enrollment anyway)
#   --site NAME           подразделение, as in the roster
#   --role ROLE           workstation (default) or server
#   --token-file FILE     enrollment token from a file
#   --token -             read the token from standard input (not echoed on a terminal)
#   --token TOKEN         the token itself (visible to other users in `ps`: prefer the above)
#                         Also: $DOZOR_ENROLL_TOKEN / $DOZOR_TOKEN in the environment.
#   --ca-file FILE        the region's CA (PEM), copied to /etc/dozor/region-ca.pem
#   --enroll-url URL      enrollment API base (default https://{collector host}:8443)
#   --allow-plain-http    enroll over http:// (labs only)
#   --probe NAME=URL      a probe target (repeatable)
#   --keep-config         do not write /etc/dozor/agent.toml (it was placed another way)
#   --wait-enrolled SECS  wait for the agent to enroll (needs systemd), fail after SECS
#
# The token is never printed, logged or passed on a command line by this script.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
package="" binary="" collector="" mo="" site="" role="workstation" token_file="" token_arg=""
ca_file="" enroll_url="" plain_http=0 keep_config=0 wait_secs=0 probes=""

die() { echo "install.sh: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --package) need_arg "$@"; package=$2; shift 2 ;;
        --binary) need_arg "$@"; binary=$2; shift 2 ;;
        --collector) need_arg "$@"; collector=$2; shift 2 ;;
        --mo) need_arg "$@"; mo=$2; shift 2 ;;
        --site) need_arg "$@"; site=$2; shift 2 ;;
        --role) need_arg "$@"; role=$2; shift 2 ;;
        --token-file) need_arg "$@"; token_file=$2; shift 2 ;;
        --token) need_arg "$@"; token_arg=$2; shift 2 ;;
        --ca-file) need_arg "$@"; ca_file=$2; shift 2 ;;
        --enroll-url) need_arg "$@"; enroll_url=$2; shift 2 ;;
        --allow-plain-http) plain_http=1; shift ;;
        --probe) need_arg "$@"; probes="$probes
$2"; shift 2 ;;
        --keep-config) keep_config=1; shift ;;
        --wait-enrolled) need_arg "$@"; wait_secs=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
case "$role" in workstation|server) ;; *) die "--role: workstation or server, not $role" ;; esac
if [ "$keep_config" -eq 0 ] && [ -z "$collector" ] && [ ! -f /etc/dozor/agent.toml ]; then
    die "--collector is required on a first install"
fi

# The token, held in a private temporary file only as long as the script runs.
umask 077
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT INT TERM
tok="$tmpdir/token"
if [ -n "$token_file" ]; then
    [ -r "$token_file" ] || die "--token-file: cannot read $token_file"
    tr -d ' \t\r\n' < "$token_file" > "$tok"
elif [ "$token_arg" = "-" ]; then
    if [ -t 0 ]; then
        printf 'Enrollment token (not shown): ' >&2
        stty -echo
        IFS= read -r t || t=""
        stty echo
        echo >&2
    else
        IFS= read -r t || t=""
    fi
    printf '%s' "$t" | tr -d ' \t\r\n' > "$tok"
    unset t
elif [ -n "$token_arg" ]; then
    printf '%s' "$token_arg" | tr -d ' \t\r\n' > "$tok"
elif [ -n "${DOZOR_ENROLL_TOKEN:-${DOZOR_TOKEN:-}}" ]; then
    printf '%s' "${DOZOR_ENROLL_TOKEN:-${DOZOR_TOKEN:-}}" | tr -d ' \t\r\n' > "$tok"
fi
token_arg=""
unset DOZOR_ENROLL_TOKEN DOZOR_TOKEN 2>/dev/null || true
if [ -f "$tok" ] && [ ! -s "$tok" ]; then die "the enrollment token is empty"; fi

# The service user, as the package's maintainer scripts create it (also for --binary).
getent group dozor-agent >/dev/null || groupadd --system dozor-agent
getent passwd dozor-agent >/dev/null || useradd --system --gid dozor-agent \
    --home-dir /var/lib/dozor-agent --no-create-home --shell /usr/sbin/nologin \
    --comment "dozor agent" dozor-agent
install -d -m 0755 /etc/dozor
install -d -m 0700 -o dozor-agent -g dozor-agent /var/lib/dozor-agent

# Configuration, before the package: dpkg (--force-confold) and rpm (%config(noreplace))
# keep an agent.toml that is already there.
toml_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
if [ -n "$ca_file" ]; then
    install -m 0644 "$ca_file" /etc/dozor/region-ca.pem
fi
if [ "$keep_config" -eq 0 ] && [ -n "$collector" ]; then
    case "$collector" in
        mqtt://*|mqtts://*) mqtt_url=$collector ;;
        *:*) mqtt_url="mqtts://$collector" ;;
        *) mqtt_url="mqtts://$collector:8883" ;;
    esac
    conf="$tmpdir/agent.toml"
    {
        echo "# Written by deploy/install.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); reference: dozor-agent --print-default-config"
        if [ -n "$mo" ]; then echo "mo = $(toml_str "$mo")"; fi
        echo "role = $(toml_str "$role")"
        echo "site = $(toml_str "$site")"
        echo
        echo "[mqtt]"
        echo "url = $(toml_str "$mqtt_url")"
        if [ -n "$enroll_url" ] || [ "$plain_http" -eq 1 ]; then
            echo
            echo "[enroll]"
            echo "# The token file is named in /etc/dozor/agent.env (DOZOR_ENROLL_TOKEN_FILE)."
            if [ -n "$enroll_url" ]; then echo "url = $(toml_str "$enroll_url")"; fi
            if [ "$plain_http" -eq 1 ]; then echo "allow_plain_http = true"; fi
        fi
        if [ -n "$ca_file" ]; then
            echo
            echo "[tls]"
            echo 'ca_file = "/etc/dozor/region-ca.pem"'
        fi
        printf '%s\n' "$probes" | while IFS= read -r p; do
            [ -n "$p" ] || continue
            name=${p%%=*}
            url=${p#*=}
            [ "$name" != "$p" ] || die "--probe: expected NAME=URL, got $p"
            echo
            echo "[[probe]]"
            echo "name = $(toml_str "$name")"
            echo "url = $(toml_str "$url")"
        done
    } > "$conf"
    install -m 0644 "$conf" /etc/dozor/agent.toml
fi

# The token, through the same helper the package uses (0640 root:dozor-agent, agent.env).
set_token() {
    if [ -x /usr/lib/dozor-agent/dozor-set-token ]; then
        /usr/lib/dozor-agent/dozor-set-token "$@"
    else
        "$here/lib/dozor-set-token" "$@"
    fi
}
if [ -s "$tok" ]; then
    set_token "$tok"
fi

# The package, or the bare binary and the unit.
if [ -z "$package" ] && [ -z "$binary" ]; then
    package=$(ls -t "$here"/dozor-agent[_-]*.deb "$here"/dozor-agent-*.rpm \
        "$here"/../target/packages/dozor-agent[_-]*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$package" ] || die "no --package or --binary given and no package found"
fi
if [ -n "$package" ]; then
    [ -r "$package" ] || die "--package: cannot read $package"
    case "$package" in
        *.deb) DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold -i "$package" ;;
        *.rpm) rpm -U --replacepkgs "$package" ;;
        *) die "--package: a .deb or .rpm, not $package" ;;
    esac
else
    [ -x "$binary" ] || die "--binary: $binary is not an executable"
    install -m 0755 "$binary" /usr/bin/dozor-agent
    install -d /usr/lib/dozor-agent /etc/systemd/system
    install -m 0755 "$here/lib/dozor-set-token" /usr/lib/dozor-agent/dozor-set-token
    install -m 0644 "$here/systemd/dozor-agent.service" /etc/systemd/system/dozor-agent.service
    if [ ! -f /etc/dozor/agent.toml ]; then
        /usr/bin/dozor-agent --print-default-config > /etc/dozor/agent.toml
    fi
fi

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable dozor-agent.service >/dev/null 2>&1
    systemctl restart dozor-agent.service
    if [ "$wait_secs" -gt 0 ]; then
        i=0
        while [ ! -s /var/lib/dozor-agent/identity.json ]; do
            i=$((i + 1))
            [ "$i" -le "$wait_secs" ] || die "not enrolled after ${wait_secs}s: journalctl -u dozor-agent"
            sleep 1
        done
        echo "install.sh: enrolled"
    fi
    echo "install.sh: dozor-agent installed and running"
else
    echo "install.sh: dozor-agent installed; systemd is not running here, start it with the unit's ExecStart"
fi
