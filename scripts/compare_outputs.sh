#!/usr/bin/env bash
# Run the main commands on the sample with the package at two commits and list what differs in
# their outputs (exit statuses, every command's --help, summary lines with timings removed, tables, records, sorted tree).
#   scripts/compare_outputs.sh BASE_COMMIT [NEW_COMMIT]     (default NEW_COMMIT: HEAD)
# Needs the sample archive unpacked: SAMPLE=/path/with/{train,test,sample_submission.csv}.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
base=$1; new=${2:-HEAD}; work=$(mktemp -d); sample=${SAMPLE:?set SAMPLE to the unpacked sample archive}
mkdir -p "$work/labelled"
ls "$sample/train" | grep -E '^(cat|dog)\.1[0-9]{2}\.jpg$' | while read -r f; do cp "$sample/train/$f" "$work/labelled/"; done
run() {  # TREE OUT
    local tree=$1 out=$2; mkdir -p "$out"
    c() { local name=$1; shift; (cd "$out" && PYTHONPATH=$tree "$VENV/bin/python" -m catsdogs_batch.cli "$@" >"$name.out" 2>"$name.err"; echo $? >"$name.rc"); }
    for command in "" download train predict submission submit label evaluate export review audit; do
        c "help-${command:-catsdogs}" $command --help
    done
    c train train --data "$sample/train" --out run
    c predict predict run "$sample/test" --out pred.csv --no-progress
    c label label run "$sample/test" --out label.csv --sort-into sorted --uncertain 0.3 0.7 --no-progress
    c evaluate evaluate run "$work/labelled" --out eval --no-progress
    c submission submission --model run --test-dir "$sample/test" --sample-submission "$sample/sample_submission.csv" --out sub --no-progress
}
for side in base new; do
    commit=${!side}; git -C "$ROOT" worktree add -q "$work/tree-$side" "$commit"
    run "$work/tree-$side" "$work/$side"
    git -C "$ROOT" worktree remove --force "$work/tree-$side"
done
cd "$work"
for f in base/*.rc; do n=$(basename "$f" .rc); [ "$(cat "$f")" = "$(cat "new/$n.rc")" ] || echo "exit status differs: $n"; done
for f in base/help-*.out; do cmp -s "$f" "new/${f#base/}" || echo "help differs: $(basename "$f" .out)"; done
for n in predict label evaluate submission; do
    diff <(sed -E 's/[0-9.]+ s\b|[0-9.]+ img\/s/T/g' "base/$n.out") <(sed -E 's/[0-9.]+ s\b|[0-9.]+ img\/s/T/g' "new/$n.out") >/dev/null || echo "summary differs: $n"
done
for f in pred.csv label.csv sub/submission.csv sub/results.csv eval/results.csv eval/metrics.json run/split.csv; do
    cmp -s "base/$f" "new/$f" || echo "differs: $f"
done
diff <(cd base/sorted && find . | sort) <(cd new/sorted && find . | sort) >/dev/null || echo "sorted trees differ"
echo "compared in $work"
