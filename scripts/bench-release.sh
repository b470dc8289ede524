#!/bin/bash
# Update over HTTP next to a local install: recovery install of the corpus
# incremental from a file vs recovery update from a repository served by nginx
# on loopback (same device state, caches dropped before each).
set -euo pipefail
W=${2:?usage: bench-release.sh CORPUS_DIR WORKDIR}; mkdir -p "$W"; cd "$W"
R=${ROMDELTA:-romdelta}
C=${1:?usage: bench-release.sh CORPUS_DIR (rootfs-A.ext4, rootfs-B.ext4) WORKDIR}
# The incremental, with the two builds' identities.
for v in 1 2; do printf "ro.product.device=corpus\nro.build.region=Global\nro.build.channel=stable\nro.build.version.incremental=V$v\nro.build.fingerprint=debian/corpus:12/V$v:user/release-keys\nro.build.date.utc=17600000$v\n" > b$v.prop; done
[ -f vendor.key ] || $R keygen -o vendor.key >/dev/null
[ -f inc.romdelta ] || $R diff --key vendor.key --source-build b1.prop --target-build b2.prop $C/rootfs-A.ext4 $C/rootfs-B.ext4 -o inc.romdelta
rm -rf A devL devR repo keys nginx
mkdir -p A keys nginx
ln -f $C/rootfs-A.ext4 A/rootfs-B.img
cp b1.prop A/build.prop
for k in root targets snapshot timestamp; do $R keygen -o keys/$k.key >/dev/null; done
$R repo init --repo repo --root-key keys/root.key --targets-key keys/targets.key.pub --snapshot-key keys/snapshot.key.pub --timestamp-key keys/timestamp.key.pub
$R publish --repo repo --targets-key keys/targets.key --snapshot-key keys/snapshot.key --timestamp-key keys/timestamp.key --trusted-key vendor.key.pub inc.romdelta
PORT=18471
cat > nginx/nginx.conf <<EOC
daemon off; master_process off; worker_processes 1; pid $PWD/nginx/pid; error_log $PWD/nginx/error.log warn;
events { worker_connections 64; }
http { access_log $PWD/nginx/access.log; default_type application/octet-stream; sendfile on;
  client_body_temp_path $PWD/nginx/b; proxy_temp_path $PWD/nginx/p; fastcgi_temp_path $PWD/nginx/f; uwsgi_temp_path $PWD/nginx/u; scgi_temp_path $PWD/nginx/s;
  server { listen 127.0.0.1:$PORT; root $PWD/repo; location / { } } }
EOC
/usr/sbin/nginx -p $PWD/nginx -e $PWD/nginx/error.log -c $PWD/nginx/nginx.conf & NG=$!
trap "kill $NG" EXIT
sleep 1
for round in 1 2 3; do
  rm -rf devL devR
  $R recovery init --device devL --from A >/dev/null
  $R recovery init --device devR --from A >/dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "local  round $round: %e s, %M KB max RSS" $R recovery install inc.romdelta --device devL --trusted-key vendor.key.pub
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "remote round $round: %e s, %M KB max RSS" $R recovery update --device devR --repo http://127.0.0.1:$PORT --root repo/metadata/1.root.json --trusted-key vendor.key.pub --json | grep -E "bytes_received|seconds"
  cmp devL/rootfs-B_b.img $C/rootfs-B.ext4 && cmp devR/rootfs-B_b.img $C/rootfs-B.ext4 && echo "both exact"
done
