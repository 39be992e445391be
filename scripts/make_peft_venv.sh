#!/usr/bin/env bash
# A separate Python with CPU torch and peft for the PEFT oracle test (tests/export/
# test_peft_export.py), kept out of .venv: torch there would change what transformers imports
# in every engine process. Usage: scripts/make_peft_venv.sh [FOLDER]  (default /work/venv-peft)
# then: TAILOR_PEFT_PYTHON=FOLDER/bin/python .venv/bin/python -m pytest -p no:cacheprovider \
#           tests/export/test_peft_export.py -k logits
# torch==2.13.0 is the CPU build this machine keeps on disk; elsewhere pin a CPU build of
# torch yourself, or pip may pull a CUDA build of several GB.
set -euo pipefail
venv="${1:-/work/venv-peft}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q 'torch==2.13.0' peft safetensors numpy
"$venv/bin/python" -c "import torch, peft; print('torch', torch.__version__, 'peft', peft.__version__)"
