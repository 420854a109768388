#!/usr/bin/env bash
# Prove that a wheelhouse made by scripts/wheelhouse.sh installs catsdogs-batch with no internet:
# a fresh virtual environment in a temporary folder, `pip install --no-index --find-links FOLDER
# catsdogs-batch` (--no-index: pip looks at nothing but FOLDER; pip configuration files and PIP_*
# variables are ignored so that no other wheel folder sneaks in), then `catsdogs --help` and the
# packaged EfficientNet-Lite0 ImageNet weights loaded through catsdogs_batch.torch_weights.
#
# Usage: scripts/check_wheelhouse.sh [FOLDER]        (FOLDER defaults to dist/wheelhouse)
# Run it with a Python of the version the wheelhouse targets (PYTHON=python3.11 by default
# python3). A folder built with --without-tensorflow expects tensorflow and keras preinstalled, as
# on Kaggle; here they are first installed from the package index to stand in for that.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
wheelhouse="$(cd "${1:-$ROOT/dist/wheelhouse}" && pwd)"
ls "$wheelhouse"/catsdogs_batch-*.whl >/dev/null

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for var in $(compgen -e | grep '^PIP_' || true); do unset "$var"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1

start=$SECONDS
echo "+ $PYTHON -m venv $tmp/venv"
"$PYTHON" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip)
if ! ls "$wheelhouse"/tensorflow-*.whl >/dev/null 2>&1; then
    echo "No tensorflow wheel in $wheelhouse: installing tensorflow and keras from the index, as Kaggle preinstalls them"
    "${pip[@]}" install --quiet tensorflow keras
fi
echo "+ pip install --no-index --find-links $wheelhouse catsdogs-batch"
"${pip[@]}" install --quiet --no-index --find-links "$wheelhouse" catsdogs-batch
echo "installed in $((SECONDS - start)) s"

echo "+ catsdogs --help"
(cd "$tmp" && "$tmp/venv/bin/catsdogs" --help)

echo "+ load the packaged EfficientNet-Lite0 weights"
(cd "$tmp" && "$tmp/venv/bin/python" -c '
import catsdogs_batch, catsdogs_batch.torch_weights as tw
sd, record = tw.packaged_state_dict("efficientnet-lite0")
from importlib.resources import files
assert files("catsdogs_batch").joinpath("review_page/index.html").is_file(), "review page missing"
print("catsdogs_batch from", catsdogs_batch.__file__, "with its review page")
print("efficientnet-lite0:", len(sd), "tensors,", sum(v.size for v in sd.values()), "parameters,", record)
')
echo "OK: $wheelhouse installs catsdogs-batch offline ($((SECONDS - start)) s)"
