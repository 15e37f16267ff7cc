#!/usr/bin/env bash
# Builds every differential case of ../shared/conformance/cases with kiln and compares the image
# (config, and every file's type, mode, owner and content) with what BuildKit v0.24 built.
# Needs root. Starts the loopback registry of ../shared/registry-up.sh.
# usage: scripts/conformance.sh [CASE ...]     env: KILN (default: target/debug/kiln, built here)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${KILN_SHARED:-../shared}
if [ ! -d "$SHARED/conformance/cases" ]; then
  echo "skipped: no $SHARED/conformance/cases"
  if [ -n "${CI:-}" ]; then exit 1; else exit 0; fi
fi
bash "$SHARED/registry-up.sh" >/dev/null
if [ -z "${KILN:-}" ]; then
  cargo build --locked -q --bin kiln
  KILN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/kiln
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# run.py builds each case from its context.tar (exact modes, symlinks, empty dirs), extracted to
# a scratch directory, so the read-only shared copy is used as it is.
KILN="$KILN" KILN_ROOT="$work/state" python3 "$SHARED/conformance/run.py" --builder kiln "$SHARED/conformance/cases" "$@"
