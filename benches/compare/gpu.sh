#!/usr/bin/env bash
# fruits' CUDA engine vs what users would run on the same GPU: PyTorch (timm,
# AMP f16, channels-last) and ONNX Runtime's CUDA provider; same weights,
# same device, batch 256 by default, inference only (host pixels in, host
# features out). The issue-11 target: fruits f16 >= PyTorch AMP for both
# models (on a T4, >= 3,000 images/s for mobilenetv2).
#
#   benches/compare/gpu.sh [MODEL] [BATCH] [IMAGES]
#
# Needs an NVIDIA GPU with its driver; installs its own virtualenv
# (target/compare-gpu-venv: torch with CUDA, onnxruntime-gpu, timm, and the
# cuBLAS/NVRTC wheels fruits loads). Without a usable GPU it stops at once,
# saying why (`fruits info`).
#
# On a GPU machine with no Rust toolchain and no package index, name what is
# already there: FRUITS=path/to/fruits (a built binary) and PYTHON=python3 (one
# with torch, timm and safetensors; onnxruntime with its CUDA provider is
# measured if present, else the result says why not), with cuBLAS and NVRTC
# on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-mobilenetv2}
BATCH=${2:-256}
IMAGES=${3:-5120}
if [ -z "${FRUITS:-}" ]; then
  cargo build --release --quiet
  FRUITS=target/release/fruits
fi
if [ -z "${PYTHON:-}" ]; then
  venv=target/compare-gpu-venv
  if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import onnxruntime, timm, torch, nvidia.cublas, nvidia.cuda_nvrtc' 2>/dev/null; then
    python3 -m venv $venv
    $venv/bin/pip install --quiet -r benches/compare/requirements-gpu.txt
  fi
  PYTHON=$PWD/$venv/bin/python
  site=$($PYTHON -c 'import nvidia.cublas as c, nvidia.cuda_nvrtc as n, os; print(os.path.dirname(c.__file__) + "/lib:" + os.path.dirname(n.__file__) + "/lib")')
  export LD_LIBRARY_PATH="$site${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
info=$($FRUITS info --json)
if echo "$info" | $PYTHON -c 'import json,sys; sys.exit(0 if "unavailable" in json.load(sys.stdin)["cuda"] else 1)'; then
  echo "benches/compare/gpu.sh: no usable GPU: $(echo "$info" | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["cuda"]["unavailable"])')" >&2
  exit 1
fi
mkdir -p target/compare
w=target/compare/$MODEL.safetensors
$FRUITS weights init --model "$MODEL" --seed 0 --out "$w" > /dev/null 2>&1
onnx=target/compare/$MODEL.onnx
if ! $PYTHON -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' 2>/dev/null; then
  onnx=none
elif [ ! -f "$onnx" ]; then
  $PYTHON benches/compare/ort_pipeline.py export "$MODEL" "$w" "$onnx"
fi
out=target/compare/gpu-$MODEL-$BATCH.json
$FRUITS bench sweep --model "$MODEL" --weights "$w" --device cuda --dtypes f32,f16 \
  --batches "$BATCH" --images "$IMAGES" --no-end-to-end --json "$out"
case $onnx in none) ;; *) onnx=../../$onnx ;; esac
peers=$(cd benches/compare && $PYTHON gpu_peers.py "$MODEL" "../../$w" "$onnx" "$BATCH" "$IMAGES")
echo "$peers" > "target/compare/gpu-peers-$MODEL-$BATCH.json"
$PYTHON - "$out" "$peers" <<'PY'
import json, sys
ours = {p["dtype"]: p["images_per_sec"] for p in json.load(open(sys.argv[1]))["points"] if p["stage"] == "inference"}
peers = json.loads(sys.argv[2])
t, t32, o = peers["torch_amp_channels_last"], peers["torch_f32_channels_last"], peers["ort_cuda_f32"]
print(f"{peers['device']}, batch {peers['batch']}, inference only, images/s:")
print(f"  fruits f16 {ours['f16']:.0f}, PyTorch AMP channels-last {t:.0f}: ratio {ours['f16'] / t:.2f}")
print(f"  fruits f32 {ours['f32']:.0f}, PyTorch f32 channels-last {t32:.0f}: ratio {ours['f32'] / t32:.2f}")
if o is None:
    print(f"  ONNX Runtime CUDA not measured: {peers['ort_unavailable']}")
else:
    print(f"  fruits f32 {ours['f32']:.0f}, ONNX Runtime CUDA f32 {o:.0f}: ratio {ours['f32'] / o:.2f}")
PY
