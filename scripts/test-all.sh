#!/usr/bin/env bash
# The README's test command: install everything, lint, typecheck, then run every test and
# end with one line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== lint and typecheck"
pnpm lint
pnpm typecheck
echo "== tests"
report="$(mktemp -d)/vitest.json"
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
node scripts/summarize-tests.mjs "$report"
exit "$status"
