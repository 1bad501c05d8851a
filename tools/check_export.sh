#!/usr/bin/env bash
# Fail when the exported package and the notebooks disagree: copy futbot/ aside, run
# nbdev_export, compare. The original futbot/ is put back either way, so a hand edit
# keeps failing `make test` until it is brought back into its notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -a futbot "$scratch/futbot"
.venv/bin/nbdev_export
if ! diff -r -q -x __pycache__ "$scratch/futbot" futbot >"$scratch/diff" 2>&1; then
  echo "error: futbot/ and the notebooks disagree (was futbot/ edited by hand? edit the notebook, then nbdev_export):" >&2
  sed 's/^/  /' "$scratch/diff" >&2
  diff -r -u -x __pycache__ "$scratch/futbot" futbot | head -40 >&2 || true
  rm -rf futbot && cp -a "$scratch/futbot" futbot
  exit 1
fi
echo "export check: futbot/ matches the notebooks"
