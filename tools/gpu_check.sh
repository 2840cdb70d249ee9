#!/usr/bin/env sh
# Every GPU/TPU check in one run, on a lent accelerator with no package registry: install the
# carried wheelhouse/ (tools/gpu_wheels.sh) beside the image's JAX, then print every table of
# benchmarks/bench_accelerator.py (MoE dispatch incl. tokamax, tile sizes, attention incl.
# tokamax, chunk sizes, Grok-1-width layers end to end). Dry run on a CPU:
#   sh tools/gpu_check.sh --dry-run
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d wheelhouse ]; then
    "$PY" -m pip install -q --no-index --no-deps --target .gpu-site wheelhouse/*.whl
    PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import jax, tokamax; print("jax", jax.__version__, jax.devices())'
"$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_moe.py tests/test_attention.py
exec "$PY" -m benchmarks.bench_accelerator "$@"
