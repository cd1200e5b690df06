#!/usr/bin/env bash
# The README's demo command: install everything, build, and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
node scripts/demo.mjs
