#!/usr/bin/env bash
# Benchmark the last commit instead of the working tree: exports HEAD (git archive, read-only),
# adds this bench/ folder and the checkout's node_modules, runs `node bench/run.ts` there with
# the same arguments and copies results/latest.json back. Useful when the shared checkout has
# half-done changes in src/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
snap="$(mktemp -d /tmp/lifeline-bench-head-XXXXXX)"
trap 'rm -rf "$snap"' EXIT
commit="$(git -C "$repo" rev-parse --short HEAD)"
git -C "$repo" archive HEAD | tar -x -C "$snap"
rm -rf "$snap/bench" && cp -r "$repo/bench" "$snap/bench" && rm -rf "$snap/bench/results"
ln -s "$repo/node_modules" "$snap/node_modules"
echo "benchmarking commit $commit in $snap" >&2
status=0
(cd "$snap" && BENCH_COMMIT="$commit (clean export of HEAD)" "$repo/node_modules/.bin/node" bench/run.ts "$@") || status=$?
mkdir -p "$repo/bench/results"
[ -f "$snap/bench/results/latest.json" ] && cp "$snap/bench/results/latest.json" "$repo/bench/results/latest.json"
[ -d "$snap/bench/results/profiles" ] && cp -r "$snap/bench/results/profiles" "$repo/bench/results/"
exit $status
