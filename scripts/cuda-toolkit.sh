#!/usr/bin/env bash
# The CUDA toolkit that `--features cuda` compiles against, from PyPI wheels (no GPU, no system
# CUDA needed): nvcc, its NVVM and crt parts, the runtime headers and CCCL, pinned to CUDA 13.0 —
# the oldest 13.x, whose PTX every CUDA 13 driver can load. Installed once into .venv-cuda
# (CUDA_VENV to change), then prints the environment to build with:
#
#   eval "$(bash scripts/cuda-toolkit.sh)"
#   cargo check --features cuda      # or scripts/build-cuda.sh for a binary
#
# CUDA_COMPUTE_CAP (default 90, Hopper) names the GPU generation candle's kernels are built for
# when no GPU is visible; CUDARC_CUDA_VERSION=13000 pins cudarc's bindings to CUDA 13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CUDA_VENV:-$PWD/.venv-cuda}
version=13.0.88
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import nvidia" 2>/dev/null || [ ! -x "$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null)/bin/nvcc" ]; then
  echo "cuda-toolkit: installing nvcc $version and headers into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==$version" "nvidia-cuda-crt==$version" "nvidia-nvvm==$version" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" >&2
fi
root=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$root/bin/nvcc" ] || { echo "cuda-toolkit: no nvcc under $root" >&2; exit 1; }
echo "export PATH=\"$root/bin:\$PATH\""
echo "export CUDA_HOME=\"$root\" CUDA_ROOT=\"$root\""
echo "export CUDA_COMPUTE_CAP=\"${CUDA_COMPUTE_CAP:-90}\" CUDARC_CUDA_VERSION=13000"
