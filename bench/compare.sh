#!/bin/sh
# The same load.py run against an earlier commit and then this checkout, with both rows printed
# side by side. The commit is exported with `git archive` to a temporary directory (no worktree
# is registered in the repository) and removed afterwards.
#
#   bench/compare.sh REV [load.py options...]   e.g.  bench/compare.sh HEAD~1 --shape echo --rounds 2
#
# PYTHON: the interpreter with the project's dependencies (default: python).
set -eu
rev=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
short=$(git -C "$root" rev-parse --short "$rev")
tree=$(mktemp -d "/tmp/mcpq-$short-XXXXXX")
trap 'rm -rf "$tree"' EXIT
git -C "$root" archive "$rev" | tar -x -C "$tree"
"${PYTHON:-python}" "$root/bench/load.py" --code "$tree" --code "$root" "$@"
