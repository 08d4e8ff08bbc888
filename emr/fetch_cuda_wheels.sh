#!/usr/bin/env bash
# Downloads the CUDA wheels GPU nodes install (cuBLAS and NVRTC, pinned with
# their sha256 in emr/fruits_emr/cuda_libs.txt) into a local folder, once, for
# `fruits-emr run/up/demo` to upload with a GPU cluster's artifact:
#
#   emr/fetch_cuda_wheels.sh [DIR]
#
# DIR defaults to $FRUITS_CUDA_WHEELS, else ~/.cache/fruits/cuda-wheels
# (where fruits-emr looks by default; its --cuda-wheels DIR points
# elsewhere). About 420 MB from PyPI; pip refuses a wheel whose sha256 is
# not the pinned one and keeps the ones already there. The only command of
# fruits-emr's that uses the Internet besides AWS: the nodes never do.
# Needs Python 3 with pip: the project's .venv when present, as fruits-emr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${FRUITS_CUDA_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/fruits/cuda-wheels}}
python=${FRUITS_EMR_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
mkdir -p "$dir"
# Linux x86_64 wheels whatever this machine is; no dependencies (the
# wheels' own, nvidia-cuda-nvcc and the like, are not needed at run time).
"$python" -m pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  --require-hashes -r "$here/fruits_emr/cuda_libs.txt" -d "$dir"
echo "fetch_cuda_wheels: the CUDA wheels are in $dir"
ls -l "$dir"/*.whl
