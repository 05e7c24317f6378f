#!/usr/bin/env bash
# Lazy-loading benchmark (issue 5): remote layers read from a real OCI registry
# (docker-registry / distribution), with baselines measured in the same run.
#
#   1. cold 4 KiB random reads of a 1 GiB uncompressed layer on a loopback registry, through
#      the FUSE file (fio psync, O_DIRECT), with refillSize 262144 and 4096;
#      baseline: curl 4 KiB Range GETs of the same blob (one keep-alive connection).
#   2. cold sequential read of that layer (dd bs=4M iflag=direct); baseline: curl of the blob.
#   3. emulated WAN (netns + veth, tbf 100 Mbit/s, 5 ms each-way delay line = 10 ms RTT):
#      time until one small file of a 2-layer ext4 image (~200 MiB) can be read,
#      lazily (attach + losetup + mount + cat) vs full pull (curl both blobs, then the same).
#   4. trace replay in the WAN setup: record a trace while reading ~20 MiB of files, then
#      cold start with the trace vs warm cache.
#
# Needs root, /dev/fuse, loop devices, docker-registry, fio, curl, python3, ip/tc (iproute2),
# nsenter, mke2fs. Everything lives in one run directory (default under /dev/shm, so the
# disk is out of the picture; BENCH_TMP=DIR to change, BENCH_KEEP=1 to keep it) and is torn
# down on exit. Takes about 2-3 minutes after the build on a 2-vCPU VM.
#
# Usage: bench/registry.sh                   # prints a summary table at the end
#        BENCH_LOOP_DIO=1 bench/registry.sh  # loop devices on the WAN device with --direct-io=on
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() { echo "registry.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (loop devices, FUSE mounts, network namespaces)"
[ -c /dev/fuse ] || die "needs /dev/fuse"
for t in docker-registry fio curl python3 losetup mount umount ip tc nsenter mke2fs sha256sum cmp; do
  command -v "$t" >/dev/null || die "needs '$t' (apt-get install docker-registry fio curl python3 iproute2 util-linux e2fsprogs)"
done
python3 -c 'import asyncio, json' 2>/dev/null || die "python3 lacks asyncio/json"

echo "== building (cargo build --release -p obd-tools)"
cargo build --release -p obd-tools
BIN=$ROOT/target/release
OBD=$BIN/obd

R=$(mktemp -d "${BENCH_TMP:-/dev/shm}/obd-regbench.XXXXXX")
MNT=$R/mnt
mkdir -p "$MNT"
PIDS=()      # background processes (registries, delay line, daemons), in start order
SVCS=()      # global configs of started daemons (for obd stop)
NETNS=()     # network namespaces we created

teardown() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  echo "== teardown"
  # 1. filesystem mounts under $R (not the FUSE files themselves yet)
  local m
  for m in $(awk -v r="$R" 'index($2, r) == 1 && $3 !~ /^fuse/ {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  # 2. loop devices backed by files under $R
  losetup -l -n -O NAME,BACK-FILE | awk -v r="$R" 'index($2, r) == 1 {print $1}' |
    xargs -r -n1 losetup -d
  # 3. obd daemons: stop (flushes and unmounts their FUSE files)
  local g
  for ((i = ${#SVCS[@]} - 1; i >= 0; i--)); do
    g=${SVCS[i]}
    [ -S "$(dirname "$g")/obd.sock" ] && timeout 30 "$OBD" stop --service-config "$g" >/dev/null 2>&1
  done
  # 4. background processes by PID, newest first: daemons, delay line, registries
  local p
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null
  done
  for _ in $(seq 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  # 5. FUSE mounts left by a daemon that died
  for m in $(awk -v r="$R" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  # 6. network namespaces (removes the veth pair)
  local n
  for ((i = ${#NETNS[@]} - 1; i >= 0; i--)); do
    n=${NETNS[i]}
    ip netns del "$n"
  done
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
    echo "run directory kept: $R"
    [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc = 0 ] || echo "(remove it with: rm -rf $R)"
  else
    rm -rf "$R"
  fi
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------- helpers
declare -A RES   # results by name
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
wait_for() { # TRIES CMD...: poll every 0.1 s
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
in_cli() { nsenter --net="/run/netns/$NS_CLI" "$@"; }

# write_global NAME REFILL: a global config with everything under $R/NAME; prints its path
write_global() {
  local d=$R/$1
  mkdir -p "$d/cache" "$d/state"
  cat > "$d/global.json" <<JSON
{ "cacheConfig": { "cacheDir": "$d/cache", "cacheSizeGB": 4, "refillSize": $2 },
  "daemon": { "socket": "$d/obd.sock", "stateDir": "$d/state" },
  "logConfig": { "logLevel": 1, "logPath": "$d/obd.log" },
  "registry": { "timeoutSecs": 30, "dockerConfig": false },
  "prefetchConfig": { "concurrency": 16 },
  "download": { "enable": false } }
JSON
  echo "$d/global.json"
}

# start_daemon GLOBAL [NETNS]: obd serve in the background (in NETNS's network only)
start_daemon() {
  local g=$1 ns=${2:-}
  if [ -n "$ns" ]; then
    nsenter --net="/run/netns/$ns" "$OBD" serve --service-config "$g" >> "$(dirname "$g")/serve.out" 2>&1 &
  else
    "$OBD" serve --service-config "$g" >> "$(dirname "$g")/serve.out" 2>&1 &
  fi
  PIDS+=($!)
  SVCS+=("$g")
  wait_for 100 "$OBD" status --service-config "$g" ||
    { cat "$(dirname "$g")/serve.out" >&2; die "obd serve ($g) did not come up"; }
}

attach() { # CONFIG FUSEFILE GLOBAL
  "$OBD" attach "$1" --fuse "$2" --no-start --service-config "$3" >/dev/null ||
    die "obd attach $1 failed (daemon log: $(dirname "$3")/obd.log)"
}
detach() { "$OBD" detach "$1" --service-config "$2" 2>/dev/null || echo "warning: detach $1 failed" >&2; }
cache_clear() { "$OBD" cache --service-config "$1" clear >/dev/null 2>&1 || die "obd cache clear ($1) failed"; }

# cached_bytes GLOBAL: bytes the daemon's remote layers hold in the cache (obd status)
cached_bytes() {
  "$OBD" status --service-config "$1" 2>/dev/null | python3 -c '
import json, sys
def walk(v):
    if isinstance(v, dict):
        n = sum(x for k, x in v.items() if k in ("cachedBytes", "cached_bytes") and isinstance(x, int))
        return n + sum(walk(x) for k, x in v.items() if k not in ("cachedBytes", "cached_bytes"))
    if isinstance(v, list):
        return sum(walk(x) for x in v)
    return 0
try:
    v = json.load(sys.stdin)
    print(walk(v.get("remoteLayers", v)))
except Exception:
    print(0)'
}

# push_blob REPO FILE: monolithic upload with curl; prints the digest
push_blob() {
  local repo=$1 f=$2 d loc sep
  d=sha256:$(sha256sum "$f" | cut -d' ' -f1)
  loc=$(curl -fsS -X POST -D - -o /dev/null "$REG/v2/$repo/blobs/uploads/" |
    awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
  [ -n "$loc" ] || die "registry gave no upload Location for $repo"
  case $loc in http*) ;; *) loc=$REG$loc ;; esac
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$f" -o /dev/null "$loc${sep}digest=$d" ||
    die "upload of $f failed"
  local len
  len=$(curl -fsSI "$REG/v2/$repo/blobs/$d" | awk 'tolower($1) == "content-length:" {print $2}' | tr -d '\r')
  [ "$len" = "$(stat -c %s "$f")" ] || die "registry reports $len bytes for $d, expected $(stat -c %s "$f")"
  echo "$d"
}

# percentiles FILE: "p50 p99" in ms of a list of seconds (one per line)
percentiles() {
  python3 - "$1" <<'PY'
import math, sys
v = sorted(float(x) for x in open(sys.argv[1]).read().split())
def pct(p):  # nearest rank, as fio reports
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))] * 1000
print(f"{pct(50):.3f} {pct(99):.3f}")
PY
}

# ---------------------------------------------------------------------------------- registry
echo "== run directory $R"
START=$SECONDS
REGDATA=$R/registry
mkdir -p "$REGDATA"
REGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
reg_config() { # ADDR FILE
  cat > "$2" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGDATA
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: $1
  secret: obd-bench-secret
YML
}
reg_config "127.0.0.1:$REGPORT" "$R/registry.yml"
docker-registry serve "$R/registry.yml" > "$R/registry.log" 2>&1 &
PIDS+=($!)
REG=http://127.0.0.1:$REGPORT
wait_for 100 curl -fsS "$REG/v2/" || { cat "$R/registry.log" >&2; die "docker-registry did not start"; }
echo "registry on $REG"

# ---------------------------------------------------------------------------------- WAN topology
NS_SRV=obdb$$s
NS_CLI=obdb$$c
VA=obdb$$a
VB=obdb$$b
ip netns add "$NS_SRV"; NETNS+=("$NS_SRV")
ip netns add "$NS_CLI"; NETNS+=("$NS_CLI")
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NS_SRV"
ip link set "$VB" netns "$NS_CLI"
ip -n "$NS_SRV" addr add 10.201.0.1/24 dev "$VA"
ip -n "$NS_CLI" addr add 10.201.0.2/24 dev "$VB"
for n in "$NS_SRV" "$NS_CLI"; do ip -n "$n" link set lo up; done
ip -n "$NS_SRV" link set "$VA" up
ip -n "$NS_CLI" link set "$VB" up
# 100 Mbit/s from the registry to the client
tc -n "$NS_SRV" qdisc add dev "$VA" root tbf rate 100mbit burst 128kb latency 100ms
# a second registry process on the same storage, inside the server namespace
reg_config "10.201.0.1:5000" "$R/registry-wan.yml"
ip netns exec "$NS_SRV" docker-registry serve "$R/registry-wan.yml" > "$R/registry-wan.log" 2>&1 &
PIDS+=($!)
wait_for 100 ip netns exec "$NS_SRV" curl -fsS http://10.201.0.1:5000/v2/ ||
  { cat "$R/registry-wan.log" >&2; die "WAN registry did not start"; }
# 5 ms each way, listening in the client namespace
ip netns exec "$NS_CLI" python3 "$ROOT/bench/delayline.py" 127.0.0.1:6000 10.201.0.1:5000 5 > "$R/delayline.log" 2>&1 &
PIDS+=($!)
WAN=http://127.0.0.1:6000
wait_for 100 in_cli curl -fsS "$WAN/v2/" || { cat "$R/delayline.log" >&2; die "delay line did not start"; }
echo "WAN: netns $NS_CLI -> delay line 127.0.0.1:6000 (5 ms each way) -> $NS_SRV 10.201.0.1:5000 (tbf 100mbit)"

# ---------------------------------------------------------------------------------- daemons
G1=$(write_global d1 262144)      # loopback, default refill
G1B=$(write_global d1b 4096)      # loopback, 4 KiB refill
G2=$(write_global d2 262144)      # WAN client namespace
start_daemon "$G1"
start_daemon "$G1B"
start_daemon "$G2" "$NS_CLI"

# ---------------------------------------------------------------------------------- 1 GiB layer
echo "== building a 1 GiB uncompressed layer of random data and pushing it"
BIGDEV=$((1 << 30))
head -c $BIGDEV /dev/urandom > "$R/big.raw"
"$BIN/overlaybd-create" --vsize-bytes $BIGDEV "$R/big.data" "$R/big.index" 1 >/dev/null
"$OBD" write "$R/big.data" "$R/big.index" --offset 0 < "$R/big.raw" >/dev/null
"$BIN/overlaybd-commit" "$R/big.data" "$R/big.index" "$R/big.commit" >/dev/null
rm -f "$R/big.data" "$R/big.index"
BIG_SIZE=$(stat -c %s "$R/big.commit")
BIG_DIGEST=$(push_blob bench/big "$R/big.commit")
rm -f "$R/big.commit"
BIG_URL=$REG/v2/bench/big/blobs/$BIG_DIGEST
echo "pushed $BIG_DIGEST ($BIG_SIZE bytes)"
cat > "$R/big.json" <<JSON
{ "repoBlobUrl": "$REG/v2/bench/big/blobs",
  "lowers": [ { "digest": "$BIG_DIGEST", "size": $BIG_SIZE } ],
  "resultFile": "$R/big.result" }
JSON

# ---------------------------------------------------------------------------------- 1. random reads
NREADS=2000
NCURL=500

# cold_random NAME GLOBAL SEED: fio cold random 4 KiB reads on the FUSE file
cold_random() {
  local name=$1 g=$2 seed=$3
  cache_clear "$g"; drop_caches
  attach "$R/big.json" "$R/big.img" "$g"
  fio --name="cold-$name" --filename="$R/big.img" --readonly --rw=randread --bs=4k \
      --ioengine=psync --direct=1 --size=$BIGDEV --io_size=$((NREADS * 4096)) \
      --randseed="$seed" --output-format=json --output="$R/fio-$name.json" >/dev/null 2>&1 ||
    die "fio on $R/big.img failed"
  local cached
  cached=$(cached_bytes "$g")
  detach "$R/big.img" "$g"
  read -r RES[rand_p50_$name] RES[rand_p99_$name] RES[rand_mean_$name] RES[rand_n_$name] < <(python3 - "$R/fio-$name.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
p = j["clat_ns"]["percentile"]
print(f'{p["50.000000"] / 1e6:.3f} {p["99.000000"] / 1e6:.3f} {j["clat_ns"]["mean"] / 1e6:.3f} {j["total_ios"]}')
PY
)
  RES[rand_cached_$name]=$cached
  printf '  %-7s %s reads: p50 %s ms, p99 %s ms, mean %s ms; %s MiB fetched into the cache\n' \
    "$name" "${RES[rand_n_$name]}" "${RES[rand_p50_$name]}" "${RES[rand_p99_$name]}" \
    "${RES[rand_mean_$name]}" "$((cached >> 20))"
}

echo "== [1] cold 4 KiB random reads (fio psync direct=1, $NREADS reads, empty cache each run)"
cold_random 256k "$G1" 1111
cold_random 4k "$G1B" 2222

echo "== [1] baseline: curl 4 KiB Range GETs, $NCURL at random offsets, one keep-alive connection"
python3 - "$BIG_URL" "$BIG_SIZE" "$NCURL" > "$R/curl-rand.cfg" <<'PY'
import random, sys
url, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(3333)
for i in range(n):
    off = rng.randrange(0, (size - 4096) // 4096) * 4096
    if i:
        print("next")
    print(f'url = "{url}"\nrange = "{off}-{off + 4095}"\noutput = "/dev/null"\nsilent\n'
          'write-out = "%{http_code} %{size_download} %{time_total}\\n"')
PY
curl -K "$R/curl-rand.cfg" > "$R/curl-rand.out"
awk '$1 != 206 || $2 != 4096 {bad++} END {exit bad > 0}' "$R/curl-rand.out" ||
  die "curl range baseline: some answers were not 206 with 4096 bytes"
awk '{print $3}' "$R/curl-rand.out" > "$R/curl-rand.txt"
read -r RES[curl_p50] RES[curl_p99] < <(percentiles "$R/curl-rand.txt")
echo "  curl    $(wc -l < "$R/curl-rand.txt") GETs: p50 ${RES[curl_p50]} ms, p99 ${RES[curl_p99]} ms"

# ---------------------------------------------------------------------------------- 2. sequential
echo "== [2] cold sequential read of the 1 GiB layer (dd bs=4M iflag=direct)"
cache_clear "$G1"; drop_caches
attach "$R/big.json" "$R/big.img" "$G1"
t0=$(now)
dd if="$R/big.img" of=/dev/null bs=4M iflag=direct status=none
t1=$(now)
RES[seq_s]=$(secs "$t0" "$t1")
RES[seq_gbs]=$(awk -v b=$BIGDEV -v s="${RES[seq_s]}" 'BEGIN { printf "%.2f", b / s / 1e9 }')
echo "  obd     ${RES[seq_s]} s, ${RES[seq_gbs]} GB/s"
if cmp -s "$R/big.img" "$R/big.raw"; then
  echo "  contents: the FUSE file equals the random source (cmp)"
else
  die "the FUSE file differs from the data written into the layer"
fi
detach "$R/big.img" "$G1"
rm -f "$R/big.raw"
read -r code sz tt < <(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' "$BIG_URL")
[ "$code" = 200 ] && [ "$sz" = "$BIG_SIZE" ] || die "curl of the whole blob: HTTP $code, $sz bytes"
RES[curl_seq_s]=$tt
RES[curl_seq_gbs]=$(awk -v b="$BIG_SIZE" -v s="$tt" 'BEGIN { printf "%.2f", b / s / 1e9 }')
echo "  curl    ${RES[curl_seq_s]} s, ${RES[curl_seq_gbs]} GB/s"

# ---------------------------------------------------------------------------------- WAN image
echo "== [3] building a 2-layer ext4 image (~200 MiB of files) and pushing it"
VS=$((512 << 20))
"$OBD" create --mkfs --vsize-bytes $VS "$R/base.data" "$R/base.index" 1 >/dev/null
"$BIN/overlaybd-commit" -z -t "$R/base.data" "$R/base.index" "$R/base.blob" >/dev/null
"$BIN/overlaybd-create" --vsize-bytes $VS "$R/l2.data" "$R/l2.index" 1 >/dev/null
cat > "$R/build.json" <<JSON
{ "lowers": [ { "file": "$R/base.blob" } ],
  "upper": { "index": "$R/l2.index", "data": "$R/l2.data" },
  "resultFile": "$R/build.result" }
JSON
attach "$R/build.json" "$R/build.img" "$G1"
loop=$(losetup -f --show "$R/build.img")
mount "$loop" "$MNT"
SMALL=etc/hello.txt
SMALL_TEXT="hello from the top layer of the lazy-loading benchmark"
for d in $(seq -f %02g 0 9); do
  mkdir -p "$MNT/d$d"
  for f in $(seq -f %02g 0 19); do head -c 1M /dev/urandom > "$MNT/d$d/f$f.bin"; done
  if [ "$d" = 04 ]; then mkdir -p "$MNT/etc"; echo "$SMALL_TEXT" > "$MNT/$SMALL"; fi
done
# the trace set: 20 files of 1 MiB spread over the image, plus the small file
READSET=("$SMALL")
for d in $(seq -f %02g 0 9); do READSET+=("d$d/f05.bin" "d$d/f15.bin"); done
(cd "$MNT" && sha256sum "${READSET[@]}") > "$R/readset.sha256"
umount "$MNT"
losetup -d "$loop"
detach "$R/build.img" "$G1"
"$BIN/overlaybd-commit" -z -t "$R/l2.data" "$R/l2.index" "$R/l2.blob" >/dev/null
rm -f "$R/base.data" "$R/base.index" "$R/l2.data" "$R/l2.index"
BASE_SIZE=$(stat -c %s "$R/base.blob")
L2_SIZE=$(stat -c %s "$R/l2.blob")
BASE_DIGEST=$(push_blob bench/wan "$R/base.blob")
L2_DIGEST=$(push_blob bench/wan "$R/l2.blob")
echo "pushed base $BASE_DIGEST ($BASE_SIZE bytes), layer 2 $L2_DIGEST ($L2_SIZE bytes)"
WANURL=$WAN/v2/bench/wan/blobs
cat > "$R/wan.json" <<JSON
{ "repoBlobUrl": "$WANURL",
  "lowers": [ { "digest": "$BASE_DIGEST", "size": $BASE_SIZE },
              { "digest": "$L2_DIGEST", "size": $L2_SIZE } ],
  "resultFile": "$R/wan.result" }
JSON
python3 - "$R/wan.json" "$R/trace" > "$R/wan-trace.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["recordTracePath"] = sys.argv[2]
print(json.dumps(c, indent=1))
PY

# loop devices over the WAN device: buffered by default (as a user would run losetup);
# BENCH_LOOP_DIO=1 adds --direct-io=on (no page-cache read-ahead on the FUSE file)
LOOP_OPTS=
[ "${BENCH_LOOP_DIO:-0}" = 1 ] && LOOP_OPTS=--direct-io=on
# open_read CONFIG FILES...: attach (on the WAN daemon), losetup, mount, read FILES;
# sets T_ATTACH T_MOUNT T_READ (ns timestamps after each phase, T0 before attach)
open_read() {
  local cfg=$1; shift
  T0=$(now)
  attach "$cfg" "$R/wan.img" "$G2"
  T_ATTACH=$(now)
  LOOP=$(losetup $LOOP_OPTS -r -f --show "$R/wan.img")
  mount -o ro "$LOOP" "$MNT"
  T_MOUNT=$(now)
  (cd "$MNT" && cat "$@" > /dev/null)
  T_READ=$(now)
}
close_dev() {
  umount "$MNT"
  losetup -d "$LOOP"
  detach "$R/wan.img" "$G2"
}
check_readset() { (cd "$MNT" && sha256sum -c --quiet "$R/readset.sha256") || die "wrong file contents through the lazy device"; }

# ---------------------------------------------------------------------------------- 3. first file
echo "== [3] WAN: time until $SMALL can be read"
cache_clear "$G2"; drop_caches
open_read "$R/wan.json" "$SMALL"
got=$(cat "$MNT/$SMALL")
[ "$got" = "$SMALL_TEXT" ] || die "lazy read of $SMALL gave '$got'"
RES[lazy_s]=$(secs "$T0" "$T_READ")
RES[lazy_fetched]=$(cached_bytes "$G2")
echo "  lazy:      ${RES[lazy_s]} s (attach $(secs "$T0" "$T_ATTACH") s, losetup+mount $(secs "$T_ATTACH" "$T_MOUNT") s, cat $(secs "$T_MOUNT" "$T_READ") s); $((RES[lazy_fetched] >> 10)) KiB in the cache"
close_dev

mkdir -p "$R/pull"
t0=$(now)
in_cli curl -fsS -o "$R/pull/base.blob" "$WANURL/$BASE_DIGEST"
in_cli curl -fsS -o "$R/pull/l2.blob" "$WANURL/$L2_DIGEST"
t1=$(now)
cat > "$R/pull.json" <<JSON
{ "lowers": [ { "file": "$R/pull/base.blob" }, { "file": "$R/pull/l2.blob" } ],
  "resultFile": "$R/pull.result" }
JSON
open_read "$R/pull.json" "$SMALL"
got=$(cat "$MNT/$SMALL")
[ "$got" = "$SMALL_TEXT" ] || die "read of $SMALL after the full pull gave '$got'"
close_dev
RES[pull_dl_s]=$(secs "$t0" "$t1")
RES[pull_s]=$(awk -v d="${RES[pull_dl_s]}" -v o="$(secs "$T0" "$T_READ")" 'BEGIN { printf "%.3f", d + o }')
PULL_BYTES=$((BASE_SIZE + L2_SIZE))
echo "  full pull: ${RES[pull_s]} s (curl of $((PULL_BYTES >> 20)) MiB: ${RES[pull_dl_s]} s = $(awk -v b=$PULL_BYTES -v s="${RES[pull_dl_s]}" 'BEGIN { printf "%.1f", b / s / 1e6 }') MB/s; then attach+mount+cat $(secs "$T0" "$T_READ") s)"
[ "$(sha256sum < "$R/pull/base.blob" | cut -d' ' -f1)" = "${BASE_DIGEST#sha256:}" ] || die "pulled base blob is corrupt"
[ "$(sha256sum < "$R/pull/l2.blob" | cut -d' ' -f1)" = "${L2_DIGEST#sha256:}" ] || die "pulled layer-2 blob is corrupt"
rm -rf "$R/pull"

# ---------------------------------------------------------------------------------- 4. trace
FILES=("${READSET[@]}")
echo "== [4] WAN: trace record and replay ($(( ${#FILES[@]} - 1 )) files of 1 MiB + $SMALL)"

# record: cold cache, read the files, delete the lock, wait for <trace>.ok
: > "$R/trace"
rm -f "$R/trace.ok" "$R/trace.lock"
cache_clear "$G2"; drop_caches
open_read "$R/wan-trace.json" "${FILES[@]}"
check_readset
RES[rec_s]=$(secs "$T0" "$T_READ")
RES[rec_fetched]=$(cached_bytes "$G2")
[ -e "$R/trace.lock" ] || echo "  warning: $R/trace.lock was not created at attach" >&2
rm -f "$R/trace.lock"
wait_for 100 test -e "$R/trace.ok" || true
close_dev
wait_for 50 test -e "$R/trace.ok" || die "no $R/trace.ok after deleting the lock and detaching"
[ -s "$R/trace" ] || die "the recorded trace $R/trace is empty"
echo "  record (cold, no trace): ${RES[rec_s]} s from attach; $((RES[rec_fetched] >> 20)) MiB fetched; trace $(stat -c %s "$R/trace") bytes"

# replay log lines seen so far (to spot the next "done")
replay_done_count() { cat "$R"/d2/obd.log* 2>/dev/null | grep -cE 'prefetch replay.*(done|stopped) after' || true; }
# wait_replay BEFORE_COUNT: until the daemon logs the end of a replay and the cache has not
# grown for 0.3 s, or (no log line) the cache has not grown for 2 s; at most 60 s
wait_replay() {
  local before=$1 last=-1 stable=0 c
  for _ in $(seq 600); do
    c=$(cached_bytes "$G2")
    if [ "$c" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
    last=$c
    if [ "$(replay_done_count)" -gt "$before" ] && [ $stable -ge 3 ]; then
      REPLAY_HOW="daemon log"; return 0
    fi
    if [ "$c" -gt 0 ] && [ $stable -ge 20 ]; then REPLAY_HOW="cache stable 2 s"; return 0; fi
    sleep 0.1
  done
  REPLAY_HOW=timeout
}

# (a) cold, no trace, measured from attach
cache_clear "$G2"; drop_caches
open_read "$R/wan.json" "${FILES[@]}"
check_readset
RES[cold_s]=$(secs "$T0" "$T_READ")
RES[cold_mr_s]=$(secs "$T_ATTACH" "$T_READ")
RES[cold_fetched]=$(cached_bytes "$G2")
close_dev
echo "  cold, no trace:                    ${RES[cold_s]} s from attach (losetup+mount+read ${RES[cold_mr_s]} s); $((RES[cold_fetched] >> 20)) MiB fetched"

# (b) cold with the trace, reading right away (replay runs alongside), from attach
cache_clear "$G2"; drop_caches
open_read "$R/wan-trace.json" "${FILES[@]}"
check_readset
RES[trace_now_s]=$(secs "$T0" "$T_READ")
RES[trace_now_fetched]=$(cached_bytes "$G2")
close_dev
echo "  cold + trace, read at once:        ${RES[trace_now_s]} s from attach; $((RES[trace_now_fetched] >> 20)) MiB fetched"

# (c) cold with the trace, replay given time to finish, then losetup+mount+read
cache_clear "$G2"; drop_caches
before=$(replay_done_count)
t0=$(now)
attach "$R/wan-trace.json" "$R/wan.img" "$G2"
wait_replay "$before"
t1=$(now)
RES[replay_s]=$(secs "$t0" "$t1")
RES[replay_bytes]=$(cached_bytes "$G2")
T_ATTACH=$(now)
LOOP=$(losetup $LOOP_OPTS -r -f --show "$R/wan.img")
mount -o ro "$LOOP" "$MNT"
(cd "$MNT" && cat "${FILES[@]}" > /dev/null)
T_READ=$(now)
check_readset
RES[trace_mr_s]=$(secs "$T_ATTACH" "$T_READ")
close_dev
echo "  cold + trace, after replay:        losetup+mount+read ${RES[trace_mr_s]} s (replay took ${RES[replay_s]} s from attach, end seen by: $REPLAY_HOW; $((RES[replay_bytes] >> 20)) MiB cached)"
line=$(cat "$R"/d2/obd.log* 2>/dev/null | grep -E 'prefetch replay.*(done|stopped) after' | tail -1 || true)
[ -z "$line" ] || echo "    daemon: ${line#*prefetch }"

# (d) warm: cache full from (c), no trace
drop_caches
open_read "$R/wan.json" "${FILES[@]}"
check_readset
RES[warm_s]=$(secs "$T0" "$T_READ")
RES[warm_mr_s]=$(secs "$T_ATTACH" "$T_READ")
close_dev
echo "  warm cache, no trace:              ${RES[warm_s]} s from attach (losetup+mount+read ${RES[warm_mr_s]} s)"

# ---------------------------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
met() { awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == "<=") ? (r <= t) : (r >= t); print (ok ? "yes" : "NO") }'; }
row() { printf '| %-47s | %-12s | %-12s | %-7s | %-9s | %-4s |\n' "$@"; }

echo
echo "== summary (one run; baselines from the same run)"
row "measurement" "ours" "baseline" "ratio" "target" "met?"
row "-----------------------------------------------" "------------" "------------" "-------" "---------" "----"
for n in 256k 4k; do
  r=$(ratio "${RES[rand_p50_$n]}" "${RES[curl_p50]}")
  row "cold 4K random p50, refill $n (vs curl)" "${RES[rand_p50_$n]} ms" "${RES[curl_p50]} ms" "${r}x" "<= 2x" "$(met "$r" "<=" 2)"
  r=$(ratio "${RES[rand_p99_$n]}" "${RES[curl_p99]}")
  row "cold 4K random p99, refill $n (vs curl)" "${RES[rand_p99_$n]} ms" "${RES[curl_p99]} ms" "${r}x" "<= 10x" "$(met "$r" "<=" 10)"
done
r=$(ratio "${RES[seq_gbs]}" "${RES[curl_seq_gbs]}")
row "cold sequential 1 GiB, loopback (vs curl)" "${RES[seq_gbs]} GB/s" "${RES[curl_seq_gbs]} GB/s" "${r}x" ">= 1 GB/s" "$(met "${RES[seq_gbs]}" ">=" 1)"
r=$(ratio "${RES[lazy_s]}" "${RES[pull_s]}")
row "WAN: first small file, lazy (vs full pull)" "${RES[lazy_s]} s" "${RES[pull_s]} s" "${r}x" "<= 0.1x" "$(met "$r" "<=" 0.1)"
r=$(ratio "${RES[trace_mr_s]}" "${RES[warm_mr_s]}")
row "WAN: read set after trace replay (vs warm)" "${RES[trace_mr_s]} s" "${RES[warm_mr_s]} s" "${r}x" "<= 1.3x" "$(met "$r" "<=" 1.3)"
r=$(ratio "${RES[trace_now_s]}" "${RES[warm_s]}")
row "WAN: trace, read at once, from attach (vs warm)" "${RES[trace_now_s]} s" "${RES[warm_s]} s" "${r}x" "-" "-"
r=$(ratio "${RES[cold_s]}" "${RES[warm_s]}")
row "WAN: no trace, cold, from attach (vs warm)" "${RES[cold_s]} s" "${RES[warm_s]} s" "${r}x" "-" "-"
r=$(ratio "${RES[trace_now_s]}" "${RES[cold_s]}")
row "WAN: trace, read at once (vs cold, no trace)" "${RES[trace_now_s]} s" "${RES[cold_s]} s" "${r}x" "-" "-"
echo
echo "notes: random reads: ${RES[rand_n_256k]}/${RES[rand_n_4k]} fio reads, $((RES[rand_cached_256k] >> 20))/$((RES[rand_cached_4k] >> 20)) MiB fetched (refill 256k/4k); curl: $NCURL GETs."
echo "       WAN image: base $BASE_SIZE B + layer 2 $L2_SIZE B (ZFile lz4, tar); lazy start fetched $((RES[lazy_fetched] >> 10)) KiB."
echo "       loop devices on the WAN device: ${LOOP_OPTS:-buffered (default)}; run time $((SECONDS - START)) s without the build."
