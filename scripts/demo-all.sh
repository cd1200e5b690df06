#!/usr/bin/env bash
# The README's demo command: install everything, build, then run the main job twice:
# with the CLI (fssconfig/fss/fssd and real NBD clients, NetBSD's t_fss `basic`), and with
# the library on a 64 MiB image while writes continue.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== demo 1: the command line"
bash packages/cli-fssconfig/scripts/demo-cli.sh
echo
echo "== demo 2: the library"
node scripts/demo.mjs
