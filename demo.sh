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
