#!/usr/bin/env bash
# fuzz/run.sh SECONDS: runs every fuzz target for SECONDS each.
# Stable Rust works with `-s none`; RUSTC_BOOTSTRAP=1 enables AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
sanitizer=${SANITIZER:-none}
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "== $t for ${secs}s"
    cargo fuzz run -s "$sanitizer" --release "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
done
