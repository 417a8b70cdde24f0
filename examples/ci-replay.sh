#!/usr/bin/env bash
# A CI check that the events our app emits still reach the right Courier automations.
#
# It dry-runs the recorded events (no API key, nothing sent) and diffs the exact requests against
# golden.jsonl, which a person reviewed. A renamed event, a dropped link or a changed payload shows
# up as a diff and a failing step. After an intended change, refresh the golden file with:
#   ./ci-replay.sh --update
set -euo pipefail
cd "$(dirname "$0")"

actual=$(mktemp)
trap 'rm -f "$actual"' EXIT
# --no-ledger: every request, even those a real send from this machine already delivered.
segroute send events.jsonl --config segroute.toml --dry-run --no-ledger --output jsonl --quiet >"$actual"

if [[ "${1:-}" == "--update" ]]; then
    cp "$actual" golden.jsonl
    echo "golden.jsonl updated"
    exit 0
fi
diff -u golden.jsonl "$actual"
echo "dry run matches golden.jsonl"
