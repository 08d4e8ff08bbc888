"""What a user would run on a GPU instead of `fruits`: timm's model in
PyTorch (AMP f16, channels-last, inference mode) and the same model exported
to ONNX on ONNX Runtime's CUDA provider. Same weights file, same device,
same batch; inference only, timed from host pixels to host features as
`fruits bench sweep` times its own inference (upload included).

    python gpu_peers.py MODEL WEIGHTS.safetensors MODEL.onnx BATCH IMAGES

prints one JSON object: {"torch_amp_channels_last": images/s,
"torch_f32_channels_last": images/s, "ort_cuda_f32": images/s or null,
"ort_unavailable": why ONNX Runtime was not measured (or null), "device": name}.
MODEL.onnx may be `none` when the exporting script found no CUDA provider.
"""
import json
import sys
import time

import numpy as np
from ort_pipeline import ARCH


def torch_rate(model, weights, batch, images, amp):
    import timm
    import torch
    from safetensors.torch import load_file

    m = timm.create_model(ARCH[model], pretrained=False, num_classes=0)
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}
    m.load_state_dict(state, strict=True)
    m = m.eval().cuda().to(memory_format=torch.channels_last)
    # uint8 pixels on the host, as fruits gets them; normalised on the device.
    x = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8).pin_memory()
    mean = torch.tensor([0.485, 0.456, 0.406], device="cuda").view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device="cuda").view(1, 3, 1, 1) * 255

    def once():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            g = x.cuda(non_blocking=True).permute(0, 3, 1, 2).float()
            g = ((g - mean) / std).contiguous(memory_format=torch.channels_last)
            return m(g).float().cpu()

    for _ in range(3):
        once()
    torch.cuda.synchronize()
    rounds = max(1, images // batch)
    t = time.perf_counter()
    for _ in range(rounds):
        once()
    torch.cuda.synchronize()
    return rounds * batch / (time.perf_counter() - t), torch.cuda.get_device_name(0)


def ort_cuda(onnx_path, batch, images):
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return None, f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (has {providers})"
    sess = ort.InferenceSession(onnx_path, providers=["CUDAExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    rounds = max(1, images // batch)
    t = time.perf_counter()
    for _ in range(rounds):
        sess.run(None, {"x": x})
    return rounds * batch / (time.perf_counter() - t), None


if __name__ == "__main__":
    model, weights, onnx_path, batch, images = sys.argv[1:6]
    amp, device = torch_rate(model, weights, int(batch), int(images), amp=True)
    f32, _ = torch_rate(model, weights, int(batch), int(images), amp=False)
    if onnx_path == "none":
        ort_rate, ort_why = None, "onnxruntime has no CUDAExecutionProvider here (gpu.sh did not export)"
    else:
        ort_rate, ort_why = ort_cuda(onnx_path, int(batch), int(images))
    if ort_why:
        print(f"gpu_peers.py: ONNX Runtime CUDA not measured: {ort_why}", file=sys.stderr)
    print(json.dumps({"device": device, "batch": int(batch), "torch_amp_channels_last": amp,
                      "torch_f32_channels_last": f32, "ort_cuda_f32": ort_rate, "ort_unavailable": ort_why}))
