#!/usr/bin/env bash
# The CUDA checks, run by hand on a machine with a GPU (the lead's `device` runs; CI has none):
# every diagnostic against an exact computation on the GPU, a Monitor with every probe on a CUDA
# model, every registered method a few steps with --device cuda, and the Hessian-trace timings
# next to PyHessian on the GPU. Wheels the machine lacks may be carried in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# every method is its own `diag run` process: in parallel where pytest-xdist is there
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
if [ "${TESTS:-1}" = 1 ]; then
    python3 -m pytest -q -p no:cacheprovider -o addopts="" --timeout 300 $XDIST \
        tests/test_cuda.py "$@" 2>&1 | tee "$OUT/cuda_tests.log"
fi
if [ "${BENCH:-1}" = 1 ]; then
    python3 bench/probe_costs.py --part trace --device cuda --repeats 3 2>&1 \
        | grep -v Warning | tee "$OUT/trace_cuda.txt"
fi
if [ -n "${RANKS:-}" ]; then  # the many-core CPU of a GPU machine: rank 0 under many ranks
    timeout 240 python3 bench/ranks_sim.py --ranks $RANKS --seconds 5 2>&1 | tee "$OUT/ranks.txt"
fi
