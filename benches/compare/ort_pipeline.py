"""The alternative a user would pick: timm's model exported to ONNX, run by
ONNX Runtime (MLAS) on CPU, fed by PIL. Same weights file as `fruits`, same
preprocessing (whole image resized to 224x224 bicubic, then the model's own
mean/std as timm's pretrained config gives it: ImageNet's for MobileNet,
[-1, 1] for EfficientNet-Lite0; kept in the ONNX file's metadata).

    python ort_pipeline.py export MODEL WEIGHTS.safetensors OUT.onnx
    python ort_pipeline.py run OUT.onnx IMAGE_DIR BATCH THREADS
prints JSON: images, end-to-end images/s, inference-only images/s.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

ARCH = {"mobilenetv2": "mobilenetv2_100", "mobilenetv4-small": "mobilenetv4_conv_small",
        "efficientnet-lite0": "tf_efficientnet_lite0"}


def export(model, weights, out):
    import timm
    import torch
    from safetensors.torch import load_file

    m = timm.create_model(ARCH[model], pretrained=False, num_classes=0)
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}
    m.load_state_dict(state, strict=True)
    m.eval()
    x = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(m, x, out, input_names=["x"], output_names=["features"],
                      dynamic_axes={"x": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
    import onnx

    proto = onnx.load(out)
    for key in ("mean", "std"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(list(m.pretrained_cfg[key]))
    onnx.save(proto, out)


def run(onnx_path, image_dir, batch, threads):
    import onnxruntime as ort
    from PIL import Image

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    mean, std = (np.array(json.loads(meta[key]), np.float32) for key in ("mean", "std"))
    files = sorted(p for p in Path(image_dir).rglob("*.jpg"))
    infer = 0.0
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        arrs = []
        for f in files[i:i + batch]:
            img = Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC)
            a = (np.asarray(img, np.float32) / 255.0 - mean) / std
            arrs.append(a.transpose(2, 0, 1))
        x = np.stack(arrs)
        t = time.perf_counter()
        sess.run(None, {"x": x})
        infer += time.perf_counter() - t
    total = time.perf_counter() - start
    print(json.dumps({"images": len(files), "e2e_images_per_s": len(files) / total,
                      "inference_images_per_s": len(files) / infer}))


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(*sys.argv[2:5])
    else:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
