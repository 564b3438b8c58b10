#!/usr/bin/env bash
# Install refusalscope's dependencies without the lock into a fresh venv and run the tests:
#
#   scripts/check_latest.sh            # the newest release of every dependency
#   scripts/check_latest.sh --floors   # the lowest versions pyproject.toml allows for its
#                                      # direct dependencies (uv --resolution lowest-direct)
#   KEEP_VENV=/tmp/latest scripts/check_latest.sh   # keep the venv there
#
# It tells whether a new transformers / sae_lens / ... breaks refusalscope before users
# find out, and whether the lower bounds in pyproject.toml are true. torch is $TORCH
# (default: the pinned CPU build; a bare `torch` pulls several GB of CUDA unless the machine
# has a CPU wheel at hand, e.g. TORCH="torch<=2.14.1"). Extra arguments go to pytest.
# Prints the versions it tested and the pytest summary; exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=latest
if [ "${1:-}" = "--floors" ]; then mode=floors; shift; fi
venv="${KEEP_VENV:-$(mktemp -d)/venv}"
[ -n "${KEEP_VENV:-}" ] || trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
. "$venv/bin/activate"
torch_spec="${TORCH:-torch==2.13.0}"
pip install -q "$torch_spec"
if [ "$mode" = floors ]; then
    pip install -q uv
    uv pip install -q --python "$venv/bin/python" --resolution lowest-direct -e ".[dev,eval]" "$torch_spec"
else
    # no constraints file; eager: every dependency at its newest installable release
    pip install -q --upgrade --upgrade-strategy eager -e ".[dev,eval]" "$torch_spec"
fi
echo "== $mode versions under test"
python - <<'PY'
from importlib.metadata import version
for pkg in ("torch", "transformers", "sae-lens", "transformer-lens", "tokenizers",
            "safetensors", "huggingface-hub", "numpy", "typer", "lm-eval", "pytest"):
    print(f"{pkg}=={version(pkg)}")
PY
export TQDM_DISABLE=1
python -m pytest -q -p no:cacheprovider "$@"
