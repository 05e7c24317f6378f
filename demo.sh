#!/usr/bin/env bash
# Build overlaybd-rs and show it working on a local example:
# create a writable layer, write data into it, commit it ZFile-compressed and tar-wrapped
# (a registry-ready blob), inspect it, read the device back and compare, show sizes.
set -euo pipefail
cd "$(dirname "$0")"

echo "== building (release)"
cargo build --release --locked -q -p obd-tools
bin="$PWD/target/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "== overlaybd-create: a 1 GiB writable layer"
"$bin/overlaybd-create" rw.data rw.index 1

echo "== obd write: 16 MiB of mixed data (text and random, interleaved) at offset 1 MiB"
for i in $(seq 1 8); do
  { yes "overlaybd-rs layer demo line $i: the quick brown fox jumps over the lazy dog" || true; } |
    head -c 1048576
  head -c 1048576 /dev/urandom
done > input.bin
"$bin/obd" write rw.data rw.index --offset 1048576 < input.bin

echo "== overlaybd-commit -z -t: compress (lz4, 4 KiB blocks, CRC32C) and tar-wrap"
"$bin/overlaybd-commit" -z -t rw.data rw.index layer.tar

echo "== obd inspect layer.tar"
"$bin/obd" inspect layer.tar

echo "== obd read: the device bytes back from the committed blob"
"$bin/obd" read layer.tar --offset 1048576 --len "$(stat -c %s input.bin)" > readback.bin
if cmp -s input.bin readback.bin; then echo "read back: identical to what was written"; else
  echo "read back: DIFFERENT" >&2; exit 1; fi
"$bin/obd" read layer.tar --offset 0 --len 1048576 | cmp -s - <(head -c 1048576 /dev/zero) \
  && echo "unwritten range reads as zeros"

echo "== sizes"
printf '%-28s %12s\n' "input written" "$(stat -c %s input.bin)"
printf '%-28s %12s\n' "writable data file" "$(stat -c %s rw.data)"
printf '%-28s %12s\n' "committed blob (zfile+tar)" "$(stat -c %s layer.tar)"
printf '%-28s %12s\n' "virtual device" "$((1 << 30))"

echo
echo "== image service: an ext4 disk as layers, attached as a FUSE file, mounted through loop"
why=""
[ "$(id -u)" = 0 ] || why="needs root (mount, losetup)"
[ -z "$why" ] && [ ! -e /dev/fuse ] && why="no /dev/fuse"
[ -z "$why" ] && ! command -v mke2fs >/dev/null && why="mke2fs missing (apt-get install e2fsprogs)"
[ -z "$why" ] && ! command -v losetup >/dev/null && why="losetup missing (apt-get install mount)"
if [ -n "$why" ]; then
  echo "skipped: $why"
  exit 0
fi
cat > overlaybd.json <<JSON
{ "logConfig": { "logPath": "$work/obd.log" },
  "cacheConfig": { "cacheDir": "$work/cache", "cacheSizeGB": 1 },
  "registry": { "dockerConfig": false },
  "daemon": { "socket": "$work/obd.sock", "stateDir": "$work/state" } }
JSON
svc=(--service-config "$work/overlaybd.json")
loop=""
registry_pid=""
stop_all() {
  set +e
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
  [ -S "$work/obd.sock" ] && "$bin/obd" stop "${svc[@]}" 2>/dev/null
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap stop_all EXIT
echo "-- overlaybd-create --mkfs: a 1 GiB layer holding a fresh ext4 (made by mke2fs), committed -z"
"$bin/overlaybd-create" --mkfs base.data base.index 1 >/dev/null
"$bin/overlaybd-commit" -z base.data base.index base.commit >/dev/null
"$bin/overlaybd-create" up.data up.index 1 >/dev/null
cat > rw.json <<JSON
{ "lowers": [ { "file": "$work/base.commit" } ],
  "upper": { "data": "$work/up.data", "index": "$work/up.index" },
  "resultFile": "$work/rw.result" }
JSON
echo "-- obd attach rw.json --fuse disk.img   (starts the daemon; the file is the disk)"
"$bin/obd" attach rw.json --fuse "$work/disk.img" "${svc[@]}"
echo "   resultFile: $(cat rw.result)"
"$bin/obd" list "${svc[@]}"
loop=$(losetup -f --show "$work/disk.img")
mkdir -p mnt && mount "$loop" mnt
cp -a "$work/input.bin" mnt/ && mkdir -p mnt/etc && echo "hello from overlaybd-rs" > mnt/etc/motd
sync && df -h mnt | tail -1 && ls -l mnt
umount mnt && losetup -d "$loop" && loop=""
"$bin/obd" detach "$work/disk.img" "${svc[@]}"
echo "-- commit the changes as a second layer, attach both read-only, mount, check"
"$bin/overlaybd-commit" -z up.data up.index layer2.commit >/dev/null
cat > ro.json <<JSON
{ "lowers": [ { "file": "$work/base.commit" }, { "file": "$work/layer2.commit" } ] }
JSON
"$bin/obd" attach ro.json --fuse "$work/ro.img" "${svc[@]}"
loop=$(losetup -r -f --show "$work/ro.img")
mount -o ro "$loop" mnt
cat mnt/etc/motd
cmp -s mnt/input.bin input.bin && echo "input.bin read back through the two-layer image: identical"
umount mnt && losetup -d "$loop" && loop=""
"$bin/obd" detach "$work/ro.img" "${svc[@]}"
"$bin/obd" stop "${svc[@]}"

why=""
command -v docker-registry >/dev/null || why="docker-registry missing (apt-get install docker-registry)"
[ -z "$why" ] && ! command -v curl >/dev/null && why="curl missing"
if [ -n "$why" ]; then
  echo "registry part skipped: $why"
  exit 0
fi
echo "-- lazy loading: push both layers to a local docker-registry, attach them by digest"
port=$(( 20000 + RANDOM % 20000 ))
cat > registry.yml <<YML
version: 0.1
log: { level: warn, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: 127.0.0.1:$port, secret: obd-demo }
YML
docker-registry serve registry.yml > registry.log 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
blobs="http://127.0.0.1:$port/v2/demo/image/blobs"
lowers=""
image_size=0
for f in base.commit layer2.commit; do
  digest="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  size=$(stat -c%s "$f")
  loc=$(curl -sfi -X POST "$blobs/uploads/" | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc&digest=$digest"
  lowers="$lowers${lowers:+, }{ \"digest\": \"$digest\", \"size\": $size }"
  image_size=$((image_size + size))
done
cat > remote.json <<JSON
{ "repoBlobUrl": "$blobs", "lowers": [ $lowers ], "resultFile": "$work/remote.result" }
JSON
cat remote.json
"$bin/obd" attach remote.json --fuse "$work/remote.img" "${svc[@]}"
loop=$(losetup -r -f --show "$work/remote.img")
mount -o ro "$loop" mnt
cat mnt/etc/motd
fetched=$("$bin/obd" status "${svc[@]}" | grep -o '"cachedBytes": [0-9]*' | awk '{s += $2} END {print s}')
echo "mounted the remote image after fetching $fetched of $image_size bytes"
cmp -s mnt/input.bin input.bin && echo "input.bin read lazily from the registry: identical"
fetched=$("$bin/obd" status "${svc[@]}" | grep -o '"cachedBytes": [0-9]*' | awk '{s += $2} END {print s}')
echo "after reading input.bin: $fetched of $image_size bytes fetched"
"$bin/obd" cache ls "${svc[@]}"
umount mnt && losetup -d "$loop" && loop=""
"$bin/obd" detach "$work/remote.img" "${svc[@]}"
"$bin/obd" stop "${svc[@]}"
