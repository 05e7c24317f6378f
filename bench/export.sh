#!/usr/bin/env bash
# Export benchmark (issue "image service"): a 1 GiB file on ext4, read sequentially and with
# 4 KiB random reads, through
#   raw   : the same ext4 bytes in a plain image file on a loop device (baseline)
#   fuse  : obd attach --fuse (one regular file) -> loop -> ext4
#   nbd   : obd attach --nbd unix:SOCK -> nbdfuse -> loop -> ext4
# and the daemon's RSS with 64 devices of a 64-layer image.
# All backing files sit on tmpfs (/dev/shm) so the disk is out of the picture ("warm"); the
# page cache above them is dropped before every run. Needs root, FUSE, loop, fio, nbdfuse.
# Usage: bench/export.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in fio nbdfuse losetup mke2fs; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
cargo build --release --locked -q -p obd-tools
bin="$PWD/target/release"
W=$(mktemp -d /dev/shm/obd-bench.XXXXXX)
pids=()
cleanup() {
  set +e
  for m in $(awk -v w="$W" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r); do
    case $(awk -v m="$m" '$2==m {print $3}' /proc/mounts) in fuse*) ;; *) umount "$m";; esac
  done
  losetup -l -n -O NAME,BACK-FILE | awk -v w="$W" 'index($2, w)==1 {print $1}' | xargs -r -n1 losetup -d
  for m in $(awk -v w="$W" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r); do umount "$m" || umount -l "$m"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5; rm -rf "$W"
}
trap cleanup EXIT

cat > "$W/overlaybd.json" <<JSON
{ "logConfig": { "logLevel": 2, "logPath": "$W/obd.log" },
  "daemon": { "socket": "$W/obd.sock", "stateDir": "$W/state" } }
JSON
obd() { "$bin/obd" "$@"; }

echo "== building a ${size_mib} MiB test file in ext4"
mkdir -p "$W/src" "$W/mnt"
head -c $((size_mib << 20)) /dev/urandom > "$W/src/big.bin"
img_mib=$((size_mib + size_mib / 8 + 64))
truncate -s ${img_mib}M "$W/raw.img"
mke2fs -q -F -t ext4 -d "$W/src" "$W/raw.img"
rm -f "$W/src/big.bin"
echo "== converting it into an overlaybd layer (obd write + overlaybd-commit)"
"$bin/overlaybd-create" --vsize-bytes $((img_mib << 20)) "$W/up.data" "$W/up.index" 1 >/dev/null
obd write "$W/up.data" "$W/up.index" --offset 0 < "$W/raw.img"
"$bin/overlaybd-commit" "$W/up.data" "$W/up.index" "$W/layer.commit" >/dev/null
rm -f "$W/up.data" "$W/up.index"
cat > "$W/dev.json" <<JSON
{ "lowers": [ { "file": "$W/layer.commit" } ] }
JSON

"$bin/obd" serve --service-config "$W/overlaybd.json" 2>>"$W/serve.err" &
echo $! > "$W/daemon.pid"; pids+=("$(cat "$W/daemon.pid")")
for _ in $(seq 100); do obd status --service-config "$W/overlaybd.json" >/dev/null 2>&1 && break; sleep 0.1; done

seq_gbs() { # file -> GB/s of a cold sequential read
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1; t0=$(date +%s.%N); dd if="$1" of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
  awk -v b=$((size_mib << 20)) -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", b / (z - a) / 1e9 }'
}
rand_iops() { # file -> IOPS of 4 KiB random reads, QD16, O_DIRECT on the ext4 file
  sync; echo 3 > /proc/sys/vm/drop_caches
  fio --name=r --filename="$1" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
      --runtime=8 --time_based --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{print $8}'
}
measure() { # name loopdev
  mount -o ro "$2" "$W/mnt"
  local s1 s2 r
  s1=$(seq_gbs "$W/mnt/big.bin"); s2=$(seq_gbs "$W/mnt/big.bin"); r=$(rand_iops "$W/mnt/big.bin")
  umount "$W/mnt"
  local s; s=$(awk -v a="$s1" -v b="$s2" 'BEGIN { printf "%.2f", (a > b ? a : b) }')
  printf '%-6s seq %6s GB/s   rand4k %8s IOPS\n' "$1" "$s" "$r"
  eval "seq_$1=$s; rand_$1=$r"
}

echo "== measuring (best of 2 sequential runs, 8 s of random reads each)"
lo=$(losetup -r -f --show "$W/raw.img"); measure raw "$lo"; losetup -d "$lo"

obd attach "$W/dev.json" --fuse "$W/dev.img" --service-config "$W/overlaybd.json" >/dev/null
lo=$(losetup -r -f --show "$W/dev.img"); measure fuse "$lo"; losetup -d "$lo"
obd detach "$W/dev.img" --service-config "$W/overlaybd.json" 2>/dev/null
obd attach "$W/dev.json" --fuse "$W/dev.img" --direct-io --service-config "$W/overlaybd.json" >/dev/null
lo=$(losetup -r -f --show "$W/dev.img"); measure fusedio "$lo"; losetup -d "$lo"
obd detach "$W/dev.img" --service-config "$W/overlaybd.json" 2>/dev/null

obd attach "$W/dev.json" --nbd "unix:$W/nbd.sock" --service-config "$W/overlaybd.json" >/dev/null
mkdir -p "$W/nbdfuse"
nbdfuse -r "$W/nbdfuse" "nbd+unix:///?socket=$W/nbd.sock" & pids+=($!)
for _ in $(seq 100); do [ -e "$W/nbdfuse/nbd" ] && break; sleep 0.1; done
lo=$(losetup -r -f --show "$W/nbdfuse/nbd"); measure nbd "$lo"; losetup -d "$lo"
umount "$W/nbdfuse"
obd detach "unix:$W/nbd.sock" --service-config "$W/overlaybd.json" 2>/dev/null

echo "== daemon RSS with 64 devices of a 64-layer image"
lowers=""
for l in $(seq -w 0 63); do
  "$bin/overlaybd-create" --vsize-bytes $((1 << 30)) "$W/l.data" "$W/l.index" 1 >/dev/null
  head -c 65536 /dev/urandom | obd write "$W/l.data" "$W/l.index" --offset $((10#$l * 1048576)) >/dev/null
  "$bin/overlaybd-commit" "$W/l.data" "$W/l.index" "$W/l$l.commit" >/dev/null
  rm -f "$W/l.data" "$W/l.index"
  lowers="$lowers${lowers:+,}{\"file\":\"$W/l$l.commit\"}"
done
echo "{\"lowers\":[${lowers}]}" > "$W/deep.json"
pid=$(cat "$W/daemon.pid")
rss0=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
for i in $(seq -w 0 63); do
  obd attach "$W/deep.json" --fuse "$W/deep$i.img" --service-config "$W/overlaybd.json" >/dev/null
  head -c 4096 "$W/deep$i.img" >/dev/null
done
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
thr=$(awk '/Threads/ {print $2}' /proc/$pid/status)
for i in $(seq -w 0 63); do obd detach "$W/deep$i.img" --service-config "$W/overlaybd.json" 2>/dev/null; done

echo
echo "== results (${size_mib} MiB file, ext4, caches dropped per run)"
awk -v a="$seq_fuse" -v b="$seq_raw" 'BEGIN { printf "FUSE / raw loop sequential: %.2fx (target >= 0.6x)\n", a / b }'
awk -v a="$rand_fuse" -v b="$rand_raw" 'BEGIN { printf "FUSE / raw loop random 4K IOPS: %.2fx\n", a / b }'
awk -v a="$seq_fusedio" -v b="$seq_raw" 'BEGIN { printf "FUSE --direct-io / raw loop sequential: %.2fx\n", a / b }'
awk -v a="$rand_fusedio" -v b="$rand_raw" 'BEGIN { printf "FUSE --direct-io / raw loop random 4K IOPS: %.2fx\n", a / b }'
awk -v a="$seq_nbd" -v b="$seq_raw" 'BEGIN { printf "NBD (nbdfuse) / raw sequential: %.2fx\n", a / b }'
awk -v a="$rand_nbd" -v b="$rand_raw" 'BEGIN { printf "NBD (nbdfuse) / raw random 4K IOPS: %.2fx\n", a / b }'
printf 'daemon RSS: %d KiB idle, %d KiB with 64 devices x 64 layers (target <= 65536 KiB), %d threads\n' "$rss0" "$rss" "$thr"
