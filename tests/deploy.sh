#!/usr/bin/env bash
# Packages and rollout (issue 12), called at the end of tests/run: installs the tools it needs
# (rpm, systemd-analyze, binutils, setpriv, python3-apt; ansible-core from PyPI), builds the four
# packages with deploy/package plus a revision-2 agent .deb for the upgrade, then runs
# tests/tests/deploy.rs, which inspects them and drives the Ansible role against this machine
# (it installs, upgrades and purges dozor-agent here; root only).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "tests/deploy.sh: needs root (it installs packages)" >&2; exit 1; }
need=()
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v objdump >/dev/null 2>&1 || need+=(binutils)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v deb-systemd-helper >/dev/null 2>&1 || need+=(init-system-helpers)
/usr/bin/python3 -c 'import apt' >/dev/null 2>&1 || need+=(python3-apt)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/deploy.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v ansible-playbook >/dev/null 2>&1; then
  echo "tests/deploy.sh: installing ansible-core (PyPI)"
  python3 -m pip install --quiet ansible-core 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages ansible-core
  hash -r
fi

start=$(date +%s)
deploy/package
# The upgrade: the same binary packaged again as revision 2.
deploy/package --no-build --only agent --revision 2
echo "tests/deploy.sh: packages built in $(( $(date +%s) - start )) s"
tools/check-glibc.sh target/x86_64-unknown-linux-gnu/release-agent/dozor-agent 2.17
tools/check-glibc.sh target/x86_64-unknown-linux-gnu/release/dozor-collector 2.17
cargo test -p dozor-tests --features deploy --test deploy -- --test-threads=2 --nocapture
