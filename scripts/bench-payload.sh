#!/usr/bin/env bash
# scripts/bench-payload.sh IMAGE [WORKDIR]
#
# payload.bin extraction, romdelta next to PyPI's two payload readers, on
# a full payload of IMAGE (a partition image, whole 4096-byte blocks) that
# romdelta exports; then the same filesystem with an AVB hashtree footer
# (dm-verity tree and 2-root FEC), whose payload asks the reader to
# compute tree and FEC. Prints one table (Markdown) of wall time, MB/s of
# image written, peak RSS, and ratios; every output image is checked
# against the input.
#
# Needs: target/release/romdelta (cargo build --release), GNU time,
# `payload-dumper` (pip install android-payload-dumper) and
# `payload_dumper` (pip install payload-dumper) on PATH. Run on an idle
# machine; each tool runs with its default worker count.
set -euo pipefail
image=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
romdelta=$(realpath "${ROMDELTA:-$here/../target/release/romdelta}")
work=${2:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"

size=$(stat -c %s "$image")

rm -rf out-*
# The payloads (not timed) are kept for another run in the same WORKDIR.
if [ ! -s full.bin ]; then
    rm -rf rom && mkdir -p rom && ln -s "$image" rom/system.img
    "$romdelta" diff --format payload --full rom -o full.bin >/dev/null
fi
# The AVB image: data, tree (~1/128), FEC (~2/253 of data + tree), vbmeta.
psize=$(( (size + size / 50 + (1 << 20)) / 4096 * 4096 ))
if [ ! -s avb.bin ]; then
    rm -rf avbrom && mkdir -p avbrom
    "$romdelta" avb add-hashtree-footer "$image" -o avbrom/system.img \
        --partition-size "$psize" --partition-name system \
        --salt 5eed5eed5eed5eed5eed5eed5eed5eed >/dev/null
    "$romdelta" diff --format payload --full avbrom -o avb.bin >/dev/null
fi
want=$(sha256sum < "$image" | cut -d' ' -f1)
want_avb=$(sha256sum < avbrom/system.img | cut -d' ' -f1)

# run NAME BYTES EXPECTED_SHA OUTPUT_IMAGE COMMAND...: one timed run.
rows=()
run() {
    local name=$1 bytes=$2 expect=$3 img=$4; shift 4
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f '%e %M' -o time.txt "$@" >/dev/null 2>run.log \
        || { tail -n 20 run.log; echo "$name failed"; exit 1; }
    read -r secs kib < time.txt
    local got
    got=$(sha256sum < "$img" | cut -d' ' -f1)
    [ "$got" = "$expect" ] || { echo "$name: wrong image"; exit 1; }
    rows+=("$name|$bytes|$secs|$kib")
}

run "romdelta payload extract" "$size" "$want" out-romdelta/system.img \
    "$romdelta" payload extract full.bin -o out-romdelta
run "payload-dumper (android-payload-dumper)" "$size" "$want" out-pd/system.img \
    payload-dumper full.bin -o out-pd
mkdir -p out-pd2
run "payload_dumper (payload-dumper)" "$size" "$want" out-pd2/system.img \
    payload_dumper --out out-pd2 full.bin
run "romdelta payload extract, AVB image (tree + FEC computed)" "$psize" "$want_avb" out-avb/system.img \
    "$romdelta" payload extract avb.bin -o out-avb

base=$(echo "${rows[0]}" | cut -d'|' -f3)
base_rate=$(awk -v b="$size" -v s="$base" 'BEGIN { printf "%.1f", b / s / 1e6 }')
echo "| reader | image bytes | s | MB/s | peak RSS | vs romdelta |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
    IFS='|' read -r name bytes secs kib <<< "$r"
    rate=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
    ratio=$(awk -v r="$rate" -v b="$base_rate" 'BEGIN { printf "%.2f", r / b }')
    echo "| $name | $bytes | $secs | $rate | $((kib / 1024)) MiB | ${ratio}x |"
done
echo
echo "payload: $(stat -c %s full.bin) bytes (full, $(basename "$image")); AVB payload: $(stat -c %s avb.bin) bytes"
