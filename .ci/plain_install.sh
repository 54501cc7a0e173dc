#!/usr/bin/env bash
# A plain install (no extras) into a fresh venv runs the main journey: init, a base, two corpora
# registered, a merge. Using an extra's feature without it is one line naming the extra.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(realpath -m "${1:-.venv-plain}")"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q .
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
memo() { (cd "$work" && "$venv/bin/memo" --home "$work/home" "$@"); }
memo init
memo base create-tiny tiny --pretrain-steps 20
for corpus in harbor glassworks; do
    memo register "$corpus" "$PWD/examples/$corpus"/*.md --qa "$PWD/examples/$corpus/qa.jsonl" \
        --base tiny --steps 4 --device cpu
done
memo merge --strategy ties harbor glassworks
memo merge list
for args in "--home $work/other init --blobs s3://bucket/memo|memo-registry[s3]" \
    "--home $work/other --db postgresql+psycopg://u@127.0.0.1:9/m init|memo-registry[postgres]" \
    "--home $work/home export merge-1 $work/gguf --format gguf|memo-registry[gguf]"; do
    command="${args%%|*}" wanted="${args##*|}"
    # shellcheck disable=SC2086
    if out="$(cd "$work" && "$venv/bin/memo" $command 2>&1)"; then
        echo "plain install: 'memo $command' should need an extra" >&2; exit 1
    fi
    [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" == *"$wanted"* ]] || {
        echo "plain install: 'memo $command' said: $out" >&2; exit 1; }
done
echo "plain install: the journey ran without extras"
