#!/bin/bash
# A/B of two engine builds on first touch through an attached origin (docs/performance.md,
# "Attached devices, third pass"), as root, after `pnpm build`:
#
#   bench/first-touch-ab.sh DIST_A DIST_B [ROUNDS]
#
# DIST_A and DIST_B are copies of packages/engine/dist from the two trees (build one, copy its
# dist away, build the other). Each round, for A then B: that dist is put in place, the built
# fssd starts on demand (`fss origin add IMAGE --attach`, a 1 GiB image of random bytes, the
# image file itself as the origin), a fresh persistent unit is configured and fio writes one
# 1 MiB QD16 pass over /dev/fss/NAME (every write a first touch); printed: MiB/s and fssd's
# CPU ticks (main thread, other threads) for the pass. Environment passes through to fssd
# (FSS_DURABILITY=none for a non-persistent unit). packages/engine/dist is left as DIST_B.
# FSS_AB_DIR (default /var/tmp) is where the images and the store go: /dev/shm to measure on
# tmpfs, as `pnpm bench` does by default.
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-4}
M="$(cd "$(dirname "$0")/.." && pwd)"
for dist in "$A" "$B"; do
  case "$dist/" in "$M/packages/engine/dist/"*)
    echo "first-touch-ab: $dist: copy the dist away first (this script replaces packages/engine/dist)" >&2; exit 2;;
  esac
  [ -f "$dist/index.js" ] || { echo "first-touch-ab: $dist: no index.js (not an engine dist)" >&2; exit 2; }
done
DIR=$(mktemp -d "${FSS_AB_DIR:-/var/tmp}/fss-first-touch-ab.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
dd if=/dev/urandom of="$DIR/random" bs=1M count=1024 status=none

one_pass() { # prints "MiB/s N main N other N"
  local work="$DIR/work" fss fssconfig pid before after
  rm -rf "$work"; mkdir -p "$work"; cp "$DIR/random" "$DIR/img"
  export FSS_RUNDIR=$work/run FSS_DEVDIR=$work/dev FSS_STATEDIR=$work/state FSS_FSSD=$M/packages/fssd/dist/fssd.cjs
  fss="node $M/packages/cli-fssconfig/dist/fss.js"; fssconfig="node $M/packages/cli-fssconfig/dist/fssconfig.js"
  $fss origin add "$DIR/img" --name p --attach >/dev/null
  pid=$(cat "$work/run/fssd.pid")
  ticks() { for t in /proc/$pid/task/*; do [ "$(basename "$t")" = "$pid" ] && k=main || k=other; echo "$k $(awk '{print $14+$15}' "$t/stat")"; done | awk '{a[$1]+=$2} END {print a["main"], a["other"]}'; }
  $fssconfig -c fss0 "$DIR/img" "$DIR/back"
  before=$(ticks)
  mib=$(fio --name=w --rw=write --bs=1M --iodepth=16 --size=1G --direct=1 --ioengine=libaio \
    --filename="$work/dev/fss/p" --output-format=terse | awk -F';' '{print $48/1024}')
  after=$(ticks)
  $fssconfig -u fss0; rm -f "$DIR/back"
  $fss origin rm p; kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  echo "MiB/s $mib main $(( ${after% *} - ${before% *} )) other $(( ${after#* } - ${before#* } ))"
}

for round in $(seq "$ROUNDS"); do
  for side in A B; do
    dist=$A; [ $side = B ] && dist=$B
    rm -rf "$M/packages/engine/dist"; cp -r "$dist" "$M/packages/engine/dist"
    echo "round $round $side $(one_pass)"
  done
done
rm -rf "$M/packages/engine/dist"; cp -r "$B" "$M/packages/engine/dist"
