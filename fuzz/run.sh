#!/usr/bin/env bash
# fuzz/run.sh SECONDS: runs every fuzz target for SECONDS each.
# Stable Rust works with `-s none` (the default); for AddressSanitizer run
# SANITIZER=address RUSTC_BOOTSTRAP=1 fuzz/run.sh SECONDS.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
sanitizer=${SANITIZER:-none}
for t in $(cargo fuzz list); do
    echo "== $t for ${secs}s"
    # New inputs go to a scratch corpus; the committed seeds stay as they are.
    work=$(mktemp -d)
    cp corpus/"$t"/seed-* "$work"/ 2>/dev/null || true
    cargo fuzz run -s "$sanitizer" --release "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 > "$work.log" 2>&1 \
        || { tail -n 40 "$work.log"; echo "fuzz target $t failed"; exit 1; }
    grep -E '^Done [0-9]+ runs' "$work.log" | sed "s/^/$t: /"
    rm -rf "$work" "$work.log"
done
