#!/usr/bin/env bash
# Installs the peers `romdelta bench` compares romdelta with: Debian's
# bsdiff/bspatch, xdelta3 and zstd, GNU time, a font for the chart's text
# (DejaVu Sans), and HDiffPatch through the PyPI package hdiffpatch.
# Idempotent: installs only what is missing. Needs root for apt-get.
set -euo pipefail

need_apt=()
command -v bsdiff >/dev/null && command -v bspatch >/dev/null || need_apt+=(bsdiff)
command -v xdelta3 >/dev/null || need_apt+=(xdelta3)
command -v zstd >/dev/null || need_apt+=(zstd)
[ -x /usr/bin/time ] || need_apt+=(time)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-peers: apt-get install ${need_apt[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import hdiffpatch' 2>/dev/null; then
    echo "install-peers: pip install hdiffpatch"
    "$python" -m pip install -q hdiffpatch 2>/dev/null ||
        "$python" -m pip install -q --break-system-packages hdiffpatch
fi

echo "install-peers: bsdiff $(command -v bsdiff), xdelta3 $(command -v xdelta3)," \
    "$(zstd --version | head -n1 | sed 's/^\*\** *//; s/ *\**$//'), hdiffpatch" \
    "$("$python" -m pip show hdiffpatch 2>/dev/null | sed -n 's/^Version: //p')"
