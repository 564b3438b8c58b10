#!/usr/bin/env bash
# Install the newest releases of every dependency (no lock) into a fresh venv and run the
# tests: tells whether a new transformers / sae_lens / ... breaks refusalscope before users
# find out. torch stays the pinned CPU build (a bare `torch` pulls several GB of CUDA).
#
#   scripts/check_latest.sh            # venv in a temp folder, removed afterwards
#   KEEP_VENV=/tmp/latest scripts/check_latest.sh   # keep (and reuse) the venv there
#
# Prints the versions it tested and the pytest summary; exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KEEP_VENV:-$(mktemp -d)/venv}"
[ -n "${KEEP_VENV:-}" ] || trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q torch==2.13.0
# no constraints file; --upgrade-strategy eager: every dependency at its newest release
pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
echo "== newest releases under test"
python - <<'PY'
from importlib.metadata import version
for pkg in ("torch", "transformers", "sae-lens", "transformer-lens", "tokenizers",
            "safetensors", "huggingface-hub", "numpy", "typer", "pytest"):
    print(f"{pkg}=={version(pkg)}")
PY
export TQDM_DISABLE=1
python -m pytest -q -p no:cacheprovider "$@"
