#!/bin/bash
# Measurement behind docs/performance.md's "attached: first touch" row (as root, after pnpm build):
# fssd's CPU by thread (main, others) during a 1 MiB QD16 first-touch write of 512 MiB through
# an attached origin's kernel device and through its NBD export, twice each, alternating.
set -e
WORK="$(mktemp -d)"
M="$(cd "$(dirname "$0")/.." && pwd)"
export FSS_RUNDIR=$WORK/run FSS_DEVDIR=$WORK/dev FSS_STATEDIR=$WORK/state FSS_FSSD=$M/packages/fssd/dist/fssd.cjs
mkdir -p /dev/shm/fss-first-touch
truncate -s 1G /dev/shm/fss-first-touch/img; dd if=/dev/urandom of=/dev/shm/fss-first-touch/img bs=1M count=1024 conv=notrunc status=none
LOOP=$(losetup -f --show --direct-io=on /dev/shm/fss-first-touch/img)
FSS="node --conditions=@fss/source --import $M/node_modules/tsx/dist/loader.mjs $M/packages/cli-fssconfig/src/bin/fss.ts"
FSSCONFIG="node --conditions=@fss/source --import $M/node_modules/tsx/dist/loader.mjs $M/packages/cli-fssconfig/src/bin/fssconfig.ts"
$FSS origin add $LOOP --name p --attach >/dev/null
PID=$(cat $WORK/run/fssd.pid)
cpu() { for t in /proc/$PID/task/*; do n=$(basename $t); [ "$n" = "$PID" ] && k=main || k=other; echo "$k $(awk "{print \$14+\$15}" $t/stat)"; done | awk "{a[\$1]+=\$2} END {for (k in a) print k, a[k]}" | sort; }
measure() { # $1 label, $2.. fio args
  label=$1; shift
  $FSSCONFIG -c fss0 $LOOP /dev/shm/fss-first-touch/back
  before=$(cpu); t0=$(date +%s.%N)
  fio --name=w --rw=write --bs=1M --iodepth=16 --size=512M --direct=1 --output-format=terse "$@" | awk -F';' '{print "MiB/s", $48/1024}'
  t1=$(date +%s.%N); after=$(cpu)
  echo "== $label wall $(echo "$t1 - $t0" | bc)"
  join <(echo "$before") <(echo "$after") | awk '{printf "  %s %d ticks\n", $1, $3-$2}'
  $FSSCONFIG -u fss0; rm -f /dev/shm/fss-first-touch/back
}
measure attached --ioengine=libaio --filename=$WORK/dev/fss/p
measure nbd --ioengine=nbd --uri="nbd+unix:///?socket=$WORK/run/origin/p.sock"
measure attached --ioengine=libaio --filename=$WORK/dev/fss/p
measure nbd --ioengine=nbd --uri="nbd+unix:///?socket=$WORK/run/origin/p.sock"
$FSS origin rm p; kill $PID; sleep 1; losetup -d $LOOP; rm -rf /dev/shm/fss-first-touch "$WORK"
