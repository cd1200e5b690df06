#!/usr/bin/env bash
# Installs everything fss needs on a fresh Debian 12 machine (as root), then the workspace
# dependencies, and builds every package. Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== system packages (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    e2fsprogs xfsprogs btrfs-progs util-linux fio qemu-utils libnbd-bin nbdkit fuse3 kmod \
    man-db groff-base systemd openssl >/dev/null
fi
if ! command -v pnpm >/dev/null || [ "$(pnpm --version)" != "10.34.9" ]; then
  echo "== pnpm 10.34.9"
  npm i -g pnpm@10.34.9 >/dev/null 2>&1
fi
echo "== workspace dependencies"
pnpm install --frozen-lockfile
echo "== build"
build_log="$(mktemp)"
pnpm -r build >"$build_log" 2>&1 || { cat "$build_log"; exit 1; } # quiet unless it fails
