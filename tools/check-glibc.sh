#!/bin/sh
# check-glibc.sh BINARY MAX: fails when BINARY needs a glibc symbol version newer than MAX
# (e.g. 2.17), so the shipped agent keeps starting on Astra Linux SE 1.7 (glibc 2.28), РЕД ОС 7
# and older. Reads the dynamic symbol table's version references (objdump -T, binutils); a
# static binary has none and passes.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY MAX_GLIBC_VERSION" >&2
    exit 2
fi
bin=$1 max=$2
[ -f "$bin" ] || { echo "check-glibc: $bin: no such file" >&2; exit 2; }
command -v objdump >/dev/null || { echo "check-glibc: objdump not found (apt-get install binutils)" >&2; exit 2; }
# Every GLIBC_x.y[.z] the binary references, highest last (version sort).
versions=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -u -V)
if [ -z "$versions" ]; then
    echo "check-glibc: $bin references no GLIBC symbol versions (static)"
    exit 0
fi
highest=$(printf '%s\n' "$versions" | tail -n 1)
too_new=$(printf '%s\n%s\n' "$versions" "$max" | sort -u -V | sed -n "/^$(printf '%s' "$max" | sed 's/\./\\./g')\$/,\$p" | sed 1d)
if [ -n "$too_new" ]; then
    echo "check-glibc: $bin needs glibc $highest > $max; symbols:" >&2
    for v in $too_new; do
        objdump -T "$bin" | grep -E "GLIBC_$v\)? " | awk '{print "  " $NF " (GLIBC_'"$v"')"}' >&2
    done
    exit 1
fi
echo "check-glibc: $bin: highest GLIBC_$highest <= $max"
