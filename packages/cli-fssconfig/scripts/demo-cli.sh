#!/usr/bin/env bash
# The CLI demo: NetBSD's t_fss `basic` on a disk image, with fssconfig, fss and real NBD
# clients (qemu-io writes, nbdcopy reads), printing every command and what it printed.
# Needs a build (pnpm -r build) and qemu-io + nbdcopy (scripts/install.sh installs them).
# Everything happens in a temporary directory that is removed at the end, daemon included.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dist="$here/dist"
for tool in qemu-io nbdcopy; do
  command -v "$tool" >/dev/null || { echo "demo-cli: $tool is not installed (scripts/install.sh)" >&2; exit 1; }
done
[ -f "$dist/fssconfig.js" ] || { echo "demo-cli: build first (pnpm -r build)" >&2; exit 1; }
# The daemon fssconfig starts on demand: @fss/fssd's build (an npm install finds it on PATH).
export FSS_FSSD="$here/../fssd/dist/fssd.js"
[ -f "$FSS_FSSD" ] || { echo "demo-cli: build first (pnpm -r build): no $FSS_FSSD" >&2; exit 1; }

work="$(mktemp -d /tmp/fss-demo-cli-XXXXXX)"
export FSS_RUNDIR="$work/run"
cleanup() {
  if [ -f "$FSS_RUNDIR/fssd.pid" ]; then
    pid="$(cat "$FSS_RUNDIR/fssd.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

fssconfig() { node "$dist/fssconfig.js" "$@"; }
fss() { node "$dist/fss.js" "$@"; }
show() {
  printf '\n$ %s\n' "$*"
  "$@"
}
origin="nbd+unix:///?socket=$FSS_RUNDIR/origin/image.sock"
unit="nbd+unix:///?socket=$FSS_RUNDIR/fss0.sock"
sector() { printf '%s\n' "$1" >"$2" && truncate -s 512 "$2"; }

echo "demo-cli: run directory $FSS_RUNDIR (fssd starts on demand)"
show dd if=/dev/zero of=image bs=32k count=64 status=none
show fss origin add ./image
sector 'Original data' original
show qemu-io -f raw "$origin" -c 'write -s original 0 512'
show fssconfig -c fss0 ./image ./backup
show fssconfig -lv fss0
sector 'Replacement data' replacement
show qemu-io -f raw "$origin" -c 'write -s replacement 0 512'
show nbdcopy "$unit" snapshot.img
show nbdcopy "$origin" origin.img
snap="$(head -1 snapshot.img | tr -d '\0')"
now="$(head -1 origin.img | tr -d '\0')"
printf '\nfss0 reads:   %s\norigin reads: %s\n' "$snap" "$now"
show fss status
show fssconfig -u fss0
show fss origin rm image
[ "$snap" = 'Original data' ] && [ "$now" = 'Replacement data' ] || { echo 'demo-cli: FAILED' >&2; exit 1; }
echo
echo 'demo-cli: the snapshot kept "Original data" while the origin now holds "Replacement data"'
