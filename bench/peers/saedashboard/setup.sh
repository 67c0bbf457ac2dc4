#!/usr/bin/env bash
# The peer's environment in bench/peers/saedashboard/.venv (gitignored): SAEDashboard 0.8 with
# TransformerLens 2.x and transformers 4.56, apart from Loupe's (TransformerLens 3, transformers 5).
# torch first and pinned: it takes the CPU build on this machine's disk (a bare torch requirement
# pulls a multi-GB CUDA build); then every package at its frozen version, without resolving (see
# requirements.txt for the two declared requirements that cannot hold).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3.11}
test -x "$here/.venv/bin/python" || "$python" -m venv "$here/.venv" || python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q torch==2.13.0
"$here/.venv/bin/pip" install -q --no-deps -r "$here/requirements.txt"
"$here/.venv/bin/python" -c "import sae_dashboard.sae_vis_runner; from importlib.metadata import version as v; print('peer env ready:', *(p + ' ' + v(p) for p in ('sae-dashboard', 'transformer-lens', 'numpy')))"
