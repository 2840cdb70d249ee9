#!/usr/bin/env sh
# Download the wheels the accelerator benchmark needs beyond an accelerator image's own JAX
# (tokamax, qwix and what they import) into wheelhouse/, for a machine with no package
# registry. Usage: sh tools/gpu_wheels.sh [PYTHON_VERSION]   (default 3.12: the H200 image's)
# Then: run tools/gpu_check.sh there, carrying wheelhouse/.
set -eu
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
rm -rf wheelhouse && mkdir wheelhouse
python3 -m pip download -q --no-deps -d wheelhouse --python-version "$PYV" --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    "tokamax>=0.0.17" "qwix>=0.1.8" einshape jaxtyping wadler-lindig pydantic pydantic-core \
    annotated-types typing-inspection immutabledict tensorboardx xprof fire termcolor six
du -sh wheelhouse
