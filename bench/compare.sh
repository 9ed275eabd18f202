#!/usr/bin/env bash
# Two revisions side by side: bench/stream.py and bench/concurrency.py of OLD_REV (in a git worktree) and
# of this checkout, run alternately, old first, ROUNDS times each, so the machine's drift hits both
# alike. Prints each run's JSON line under a header; compare the ratios inside one run's lines.
#
#   bash bench/compare.sh 1b670b3 2 > compare.log     # the stream-owner redesign against the code before it
#
# Pause background jobs first (kill -STOP <pid>): the ratios are only as good as the machine is quiet.
set -euo pipefail
old_rev=${1:?usage: bench/compare.sh OLD_REV [ROUNDS]}
rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
old=$(mktemp -d /tmp/vsod-compare-XXXXXX)
trap 'git -C "$here" worktree remove --force "$old" >/dev/null 2>&1 || true' EXIT
git -C "$here" worktree add --detach --force "$old" "$old_rev" >/dev/null
for bench in "stream.py --threads 1 --rounds 3 --frames 60" "concurrency.py --threads 1 --sessions 4 16 --seconds 6"; do
  for round in $(seq "$rounds"); do
    for tree in "$old" "$here"; do
      echo "== $bench | $([ "$tree" = "$old" ] && echo "old $old_rev" || echo "new $(git -C "$here" rev-parse --short HEAD)") | round $round"
      # shellcheck disable=SC2086  # the bench's arguments are meant to split
      (cd "$tree" && PYTHONPATH="$tree" python3 bench/$bench 2>&1 | tail -1)
    done
  done
done
