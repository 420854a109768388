#!/usr/bin/env bash
# The main job, end to end with defaults: download the competition data, train a checkpoint,
# write a submission. Creates .venv if missing. Arguments go to `catsdogs download`, e.g.
#   scripts/quickstart.sh --archive ~/Downloads/dogs-vs-cats-redux-kernels-edition.zip
#   scripts/quickstart.sh --competition dogs-vs-cats
# Safe to rerun: finished stages are skipped, an interrupted training run is resumed.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" ""

# Paths given as --archive and --data-dir are relative to where the caller stands, not to $ROOT:
# make them absolute before moving there.
absolute() { if [[ -z "$1" || "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
args=()
path_next=false
for arg in "$@"; do
    if $path_next; then
        arg="$(absolute "$arg")"
        path_next=false
    else
        case "$arg" in
            --archive | --data-dir) path_next=true ;;
            --archive=* | --data-dir=*) arg="${arg%%=*}=$(absolute "${arg#*=}")" ;;
        esac
    fi
    args+=("$arg")
done
set -- ${args[@]+"${args[@]}"}
cd "$ROOT"
catsdogs="$VENV/bin/catsdogs"

competition=dogs-vs-cats-redux-kernels-edition
data_dir=data
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --competition) competition="${args[i + 1]}" ;;
        --competition=*) competition="${args[i]#*=}" ;;
        --data-dir) data_dir="${args[i + 1]}" ;;
        --data-dir=*) data_dir="${args[i]#*=}" ;;
    esac
done
data="$data_dir/$competition"
run="models/quickstart-$competition"

echo "== 1/3 download"
"$catsdogs" download "$@"

echo "== 2/3 train -> $run"
if [ ! -f "$run/run.json" ]; then
    "$catsdogs" train --data "$data/train" --out "$run"
elif grep -q '"status": "finished"' "$run/run.json"; then
    echo "$run is already trained"
else
    "$catsdogs" train --out "$run" --resume
fi

echo "== 3/3 submission -> submissions/quickstart-$competition"
if [ -f "submissions/quickstart-$competition/submission.csv" ]; then
    echo "submissions/quickstart-$competition/submission.csv exists (delete it to predict again)"
else
    "$catsdogs" submission --model "$run" --test-dir "$data/test" --competition "$competition" --tta \
        --out "submissions/quickstart-$competition"
fi
