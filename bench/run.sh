#!/usr/bin/env bash
# Benchmarks for the formats and tools, with baselines measured in the same run.
#
#   bench/run.sh            # all; writes a report to bench/RESULTS.md (prints it too)
#
# Input: a deterministic 512 MiB mix of compressible text and random data, alternating in
# 64 KiB chunks (tests/fixtures/common/gen.py, seed 42), cached in bench/work/.
# Baselines: the system `lz4`/`zstd` CLIs on the same input (installed if missing and root),
# and `cp` of the same bytes for the uncompressed commit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/bench/work
mkdir -p "$work"
SIZE=$((512 << 20))

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v lz4 >/dev/null || need+=(lz4)
  command -v zstd >/dev/null || need+=(zstd)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || echo "note: could not install ${need[*]}" >&2
  fi
fi

cargo build --release --locked -q -p obd-tools
bin=$root/target/release

input=$work/mixed512m.bin
if [ ! -f "$input" ] || [ "$(stat -c %s "$input")" != "$SIZE" ]; then
  echo "generating $input ..." >&2
  python3 tests/fixtures/common/gen.py mixed $SIZE 42 65536 "$input"
fi

# time_cmd NAME CMD...: run 3 times, keep the best wall time in seconds.
declare -A T
time_cmd() {
  local name=$1; shift
  local best=""
  for _ in 1 2 3; do
    sync; local s e d
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
  done
  T[$name]=$best
}
gbps() { echo "scale=3; $SIZE / ${T[$1]} / 1000000000" | bc -l; }
ratio() { echo "scale=2; ${T[$2]} / ${T[$1]}" | bc -l; }

# Outputs go to tmpfs when there is one, so the numbers measure our code rather than the
# disk (the tools fsync what they write; on a slow virtual disk that dominates).
scratch=$work
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  scratch=/dev/shm/obd-bench
  mkdir -p "$scratch"
  cp "$input" "$scratch/input.bin"
  input=$scratch/input.bin
fi
trap 'rm -rf /dev/shm/obd-bench' EXIT
cd "$scratch"
rm -f z.* out.* rw.* commit.* cp.*

for algo in lz4 zstd; do
  time_cmd "${algo}_c" bash -c "rm -f z.$algo; '$bin/overlaybd-zfile' --algorithm $algo --bs 4 '$input' z.$algo"
  time_cmd "${algo}_d" bash -c "'$bin/overlaybd-zfile' -x z.$algo - > /dev/null"
done
time_cmd lz4_c64 bash -c "rm -f z.lz464; '$bin/overlaybd-zfile' --algorithm lz4 --bs 64 '$input' z.lz464"
time_cmd lz4_d64 bash -c "'$bin/overlaybd-zfile' -x z.lz464 - > /dev/null"
time_cmd lz4_c_1t bash -c "rm -f z.lz41; '$bin/overlaybd-zfile' --compress_threads 1 --algorithm lz4 --bs 4 '$input' z.lz41"
cmp z.lz4 z.lz41 && same_bytes=yes || same_bytes=NO

if command -v lz4 >/dev/null; then
  time_cmd base_lz4_c bash -c "lz4 -1 -q -f -B4D '$input' base.lz4"
  time_cmd base_lz4_d bash -c "lz4 -d -q -c base.lz4 > /dev/null"
fi
if command -v zstd >/dev/null; then
  time_cmd base_zstd_c bash -c "zstd -3 -q -f -T0 '$input' -o base.zst"
  time_cmd base_zstd_d bash -c "zstd -d -q -c base.zst > /dev/null"
fi

# Uncompressed commit of a 512 MiB writable layer.
rm -f rw.data rw.index
"$bin/overlaybd-create" rw.data rw.index 1 >/dev/null
"$bin/obd" write rw.data rw.index < "$input" 2>/dev/null
time_cmd commit bash -c "rm -f commit.lsmt; '$bin/overlaybd-commit' rw.data rw.index commit.lsmt"
time_cmd base_cp bash -c "rm -f cp.bin; cp --reflink=never rw.data cp.bin && sync -f cp.bin"
time_cmd commit_z bash -c "rm -f commit.zfile; '$bin/overlaybd-commit' -z rw.data rw.index commit.zfile"
"$bin/obd" read commit.zfile --len $SIZE | cmp - "$input"

zs() { stat -c %s "$1"; }
{
  echo "# Benchmark results"
  echo
  echo "Command: \`bench/run.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))."
  echo "Input: 512 MiB deterministic mix of text and random data (64 KiB alternating). Best of 3."
  echo "Files in: $scratch. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| operation | time (s) | GB/s | baseline | ratio (baseline time / ours) |"
  echo "|---|---|---|---|---|"
  echo "| zfile lz4 4K compress (all cores) | ${T[lz4_c]} | $(gbps lz4_c) | lz4 -1 CLI: ${T[base_lz4_c]:-n/a} s | $( [ -n "${T[base_lz4_c]:-}" ] && ratio lz4_c base_lz4_c) |"
  echo "| zfile lz4 4K compress (1 thread) | ${T[lz4_c_1t]} | $(gbps lz4_c_1t) | | |"
  echo "| zfile lz4 4K decompress | ${T[lz4_d]} | $(gbps lz4_d) | lz4 -d CLI: ${T[base_lz4_d]:-n/a} s | $( [ -n "${T[base_lz4_d]:-}" ] && ratio lz4_d base_lz4_d) |"
  echo "| zfile lz4 64K compress | ${T[lz4_c64]} | $(gbps lz4_c64) | | |"
  echo "| zfile lz4 64K decompress | ${T[lz4_d64]} | $(gbps lz4_d64) | | |"
  echo "| zfile zstd 4K compress (all cores) | ${T[zstd_c]} | $(gbps zstd_c) | zstd -3 -T0 CLI: ${T[base_zstd_c]:-n/a} s | $( [ -n "${T[base_zstd_c]:-}" ] && ratio zstd_c base_zstd_c) |"
  echo "| zfile zstd 4K decompress | ${T[zstd_d]} | $(gbps zstd_d) | zstd -d CLI: ${T[base_zstd_d]:-n/a} s | $( [ -n "${T[base_zstd_d]:-}" ] && ratio zstd_d base_zstd_d) |"
  echo "| commit, uncompressed 512 MiB layer | ${T[commit]} | $(gbps commit) | cp: ${T[base_cp]} s | $(ratio commit base_cp) |"
  echo "| commit -z (lz4 4K, CRC) | ${T[commit_z]} | $(gbps commit_z) | | |"
  echo
  echo "Sizes: input $SIZE; lz4 4K zfile $(zs z.lz4); zstd 4K zfile $(zs z.zstd); lz4 64K zfile $(zs z.lz464)."
  echo "Output identical with 1 thread and all threads: $same_bytes."
} > "$root/bench/results-tools.md"
cat "$root/bench/results-tools.md"
