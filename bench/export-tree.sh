#!/bin/sh
# bench/export-tree.sh COMMIT DIR [PATH...]
#
# Exports COMMIT's tree into DIR (replacing it) for `bench/ab.ts trees`, with this checkout's
# node_modules links (the root folder linked, each package's copied: pnpm's links inside are
# relative, so the exported packages resolve each other inside DIR). Each PATH given is then
# copied from this working tree over the export, so a tree can be "COMMIT plus my change to
# these paths" while other people's unfinished edits elsewhere in the working tree stay out.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 COMMIT DIR [PATH...]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$1
dir=$2
shift 2
rm -rf "$dir"
mkdir -p "$dir"
git -C "$repo" archive "$commit" | tar -x -C "$dir"
ln -s "$repo/node_modules" "$dir/node_modules"
for folder in "$repo"/packages/* "$repo"/scripts/*; do
  name=${folder#"$repo"/}
  if [ -d "$folder/node_modules" ] && [ -d "$dir/$name" ]; then cp -a "$folder/node_modules" "$dir/$name/"; fi
done
for path in "$@"; do
  rm -rf "${dir:?}/$path"
  mkdir -p "$(dirname "$dir/$path")"
  cp -a "$repo/$path" "$dir/$path"
done
echo "$dir: $commit${*:+ + $*}"
