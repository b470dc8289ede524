#!/usr/bin/env bash
# Installs the peers `romdelta bench` compares romdelta with: Debian's
# bsdiff/bspatch, xdelta3 and zstd, GNU time, a font for the chart's text
# (DejaVu Sans), HDiffPatch through the PyPI package hdiffpatch, and
# HDiffPatch's own command-line tools hdiffz/hpatchz, built from the C/C++
# source that package's sdist bundles.
#
# Usage: scripts/install-peers.sh [debian] [pypi] [hdiffz]
#   debian  the Debian packages above (bsdiff, xdelta3, zstd, time, font)
#   pypi    the PyPI package hdiffpatch (for the `hdiffpatch` peer)
#   hdiffz  hdiffz/hpatchz (for the `hdiffz` peer) in
#           ${XDG_CACHE_HOME:-$HOME/.cache}/romdelta-peers/hdiffpatch-2.6.0/bin,
#           where the harness looks for them when they are not on PATH
# With no argument, all three. Idempotent: installs only what is missing.
# Needs root (or sudo) for apt-get.
set -euo pipefail

want_debian=0 want_pypi=0 want_hdiffz=0
[ $# -gt 0 ] || set -- debian pypi hdiffz
for part in "$@"; do
    case "$part" in
        debian) want_debian=1 ;;
        pypi) want_pypi=1 ;;
        hdiffz) want_hdiffz=1 ;;
        *) echo "install-peers: unknown part '$part' (use debian, pypi, hdiffz)" >&2; exit 2 ;;
    esac
done

# HDiffPatch's native tools come from the PyPI sdist of hdiffpatch, which
# carries HDiffPatch's whole source (hdiffpatch/_c_src/HDiffPatch) and the
# zstd it is built with (hdiffpatch/_c_src/zstd). pip fetches it from the
# index it is set up with; the file must have this SHA-256.
hdp_version=2.6.0
hdp_sha256=9f0d05ee1784a8223df4ca806c47c4fc0dc2048aabd24e8694730e55a39aa5a6
python="${PYTHON:-python3}"
hdp_bin="${XDG_CACHE_HOME:-$HOME/.cache}/romdelta-peers/hdiffpatch-$hdp_version/bin"

have_hdiffz() {
    { command -v hdiffz >/dev/null && command -v hpatchz >/dev/null; } ||
        { [ -x "$hdp_bin/hdiffz" ] && [ -x "$hdp_bin/hpatchz" ]; }
}

need_apt=()
if [ $want_debian = 1 ]; then
    command -v bsdiff >/dev/null && command -v bspatch >/dev/null || need_apt+=(bsdiff)
    command -v xdelta3 >/dev/null || need_apt+=(xdelta3)
    command -v zstd >/dev/null || need_apt+=(zstd)
    [ -x /usr/bin/time ] || need_apt+=(time)
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
fi
if [ $want_hdiffz = 1 ] && ! have_hdiffz; then
    command -v gcc >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null ||
        need_apt+=(build-essential)
    "$python" -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-peers: apt-get install ${need_apt[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ $want_pypi = 1 ] && ! "$python" -c 'import hdiffpatch' 2>/dev/null; then
    echo "install-peers: pip install hdiffpatch"
    "$python" -m pip install -q hdiffpatch 2>/dev/null ||
        "$python" -m pip install -q --break-system-packages hdiffpatch
fi

# Builds hdiffz and hpatchz with HDiffPatch's own Makefile: zstd compiled
# from the bundled source, multi-threading on, and every codec and feature
# the `hdiffz` peer does not use left out (libdeflate, zlib, LZMA, bzip2,
# bsdiff and VCDIFF formats, directory diff, the unit test's objects), which
# keeps the build to about half a minute on two cores.
build_hdiffz() {
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    local sdist="$tmp/hdiffpatch-$hdp_version.tar.gz"
    # The sdist, never a wheel (`--no-binary hdiffpatch`; with `:all:` pip
    # would also build Cython from source, minutes, only to read the sdist's
    # metadata). Downloading installs nothing.
    if ! "$python" -m pip download -q --disable-pip-version-check --no-deps \
        --no-binary hdiffpatch "hdiffpatch==$hdp_version" -d "$tmp" >"$tmp/pip.log" 2>&1; then
        tail -n 20 "$tmp/pip.log" >&2
        echo "install-peers: pip download hdiffpatch==$hdp_version failed" >&2
        return 1
    fi
    if ! echo "$hdp_sha256  $sdist" | sha256sum -c --quiet - >/dev/null 2>&1; then
        echo "install-peers: $sdist (pip download hdiffpatch==$hdp_version): SHA-256 is not $hdp_sha256" >&2
        return 1
    fi
    local src="hdiffpatch-$hdp_version/hdiffpatch/_c_src"
    tar -xzf "$sdist" -C "$tmp" "$src/HDiffPatch" "$src/zstd"
    local log="$tmp/build.log"
    if ! make -C "$tmp/$src/HDiffPatch" -j"$(nproc 2>/dev/null || echo 2)" hdiffz hpatchz \
        MT=1 ZSTD=1 LDEF=0 ZLIB=0 LZMA=0 BZIP2=0 BSD=0 VCD=0 DIR_DIFF=0 MD5=0 XXH=0 \
        UTEST_OBJ= >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "install-peers: building hdiffz/hpatchz failed" >&2
        return 1
    fi
    mkdir -p "$hdp_bin"
    # Into place under temporary names first, so a half-done install never
    # looks like a finished one.
    for exe in hpatchz hdiffz; do
        install -m 0755 "$tmp/$src/HDiffPatch/$exe" "$hdp_bin/.$exe.new"
        mv -f "$hdp_bin/.$exe.new" "$hdp_bin/$exe"
    done
    echo "install-peers: built hdiffz and hpatchz ($("$hdp_bin/hdiffz" -v 2>&1 | head -n1 | sed 's/^HDiffPatch:://'), zstd, multi-threaded) from PyPI hdiffpatch $hdp_version into $hdp_bin"
    rm -rf "$tmp"
    trap - EXIT
}

built_hdiffz=0
if [ $want_hdiffz = 1 ] && ! have_hdiffz; then
    build_hdiffz
    built_hdiffz=1
fi

if [ $want_debian = 1 ]; then
    echo "install-peers: bsdiff $(command -v bsdiff), xdelta3 $(command -v xdelta3)," \
        "$(zstd --version | head -n1 | sed 's/^\*\** *//; s/ *\**$//')"
fi
if [ $want_pypi = 1 ]; then
    echo "install-peers: hdiffpatch" \
        "$("$python" -m pip show hdiffpatch 2>/dev/null | sed -n 's/^Version: //p') (PyPI)"
fi
if [ $want_hdiffz = 1 ] && [ $built_hdiffz = 0 ]; then
    if command -v hdiffz >/dev/null && command -v hpatchz >/dev/null; then
        echo "install-peers: hdiffz $(command -v hdiffz), hpatchz $(command -v hpatchz)"
    else
        echo "install-peers: hdiffz $hdp_bin/hdiffz, hpatchz $hdp_bin/hpatchz"
    fi
fi
