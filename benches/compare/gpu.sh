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
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-mobilenetv2}
BATCH=${2:-256}
IMAGES=${3:-5120}
cargo build --release --quiet
venv=target/compare-gpu-venv
if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import onnxruntime, timm, torch, nvidia.cublas, nvidia.cuda_nvrtc' 2>/dev/null; then
  python3 -m venv $venv
  $venv/bin/pip install --quiet -r benches/compare/requirements-gpu.txt
fi
site=$($venv/bin/python -c 'import nvidia.cublas as c, nvidia.cuda_nvrtc as n, os; print(os.path.dirname(c.__file__) + "/lib:" + os.path.dirname(n.__file__) + "/lib")')
export LD_LIBRARY_PATH="$site${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
info=$(target/release/fruits info --json)
if echo "$info" | $venv/bin/python -c 'import json,sys; sys.exit(0 if "unavailable" in json.load(sys.stdin)["cuda"] else 1)'; then
  echo "benches/compare/gpu.sh: no usable GPU: $(echo "$info" | $venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["cuda"]["unavailable"])')" >&2
  exit 1
fi
mkdir -p target/compare
w=target/compare/$MODEL.safetensors
target/release/fruits weights init --model "$MODEL" --seed 0 --out "$w" > /dev/null 2>&1
[ -f "target/compare/$MODEL.onnx" ] || $venv/bin/python benches/compare/ort_pipeline.py export "$MODEL" "$w" "target/compare/$MODEL.onnx"
out=target/compare/gpu-$MODEL-$BATCH.json
target/release/fruits bench sweep --model "$MODEL" --weights "$w" --device cuda --dtypes f32,f16 \
  --batches "$BATCH" --images "$IMAGES" --no-end-to-end --json "$out"
peers=$(cd benches/compare && ../../$venv/bin/python gpu_peers.py "$MODEL" "../../$w" "../../target/compare/$MODEL.onnx" "$BATCH" "$IMAGES")
echo "$peers" > "target/compare/gpu-peers-$MODEL-$BATCH.json"
$venv/bin/python - "$out" "$peers" <<'PY'
import json, sys
ours = {p["dtype"]: p["images_per_sec"] for p in json.load(open(sys.argv[1]))["points"] if p["stage"] == "inference"}
peers = json.loads(sys.argv[2])
t, o = peers["torch_amp_channels_last"], peers["ort_cuda_f32"]
print(f"{peers['device']}, batch {peers['batch']}, inference only, images/s:")
print(f"  fruits f16 {ours['f16']:.0f}, PyTorch AMP channels-last {t:.0f}: ratio {ours['f16'] / t:.2f}")
print(f"  fruits f32 {ours['f32']:.0f}, ONNX Runtime CUDA f32 {o:.0f}: ratio {ours['f32'] / o:.2f}")
PY
