#!/usr/bin/env bash
# The README's test command: install everything, lint, typecheck, build, run every test, check
# that the tests left nothing behind, and end with one line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== lint and typecheck"
pnpm lint
pnpm typecheck

snapshot_system_state() {
  {
    losetup -a -n -O NAME,BACK-FILE 2>/dev/null | sort || true
    findmnt -rn -o TARGET 2>/dev/null | grep -vE '^/(sys|proc|dev)(/|$)' | sort || true
    pgrep -a -f 'fssd|nbdfuse|nbdkit|fss-nbd' 2>/dev/null | grep -v pgrep | sed 's/^[0-9]* //' | sort || true
  } > "$1"
}

echo "== tests"
work="$(mktemp -d)"
snapshot_system_state "$work/before"
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$work/vitest.json" || status=$?
sleep 2 # nbdfuse exits on its own shortly after its FUSE mount goes away
snapshot_system_state "$work/after"
if ! diff -u "$work/before" "$work/after" > "$work/leftovers"; then
  echo "== the tests left these behind (loop devices, mounts, processes):"
  grep '^+[^+]' "$work/leftovers" || true
  grep -q '^+[^+]' "$work/leftovers" && status=1
fi
node scripts/summarize-tests.mjs "$work/vitest.json"
exit "$status"
