"""The stack of the notebook `fruits` replaces, without Spark: Keras'
MobileNetV2 (TensorFlow, CPU) fed by PIL, as the notebook featurised each
batch: open, resize the whole image to 224x224, `preprocess_input`,
`model.predict`, global-average-pooled 1280 features. Random weights
(`weights=None`: no hub here; speed does not depend on the values).

    python tf_pipeline.py IMAGE_DIR BATCH THREADS

prints JSON: images, end-to-end images/s, inference-only images/s.
"""
import json
import os
import sys
import time
from pathlib import Path


def main(image_dir, batch, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = tf.keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                              input_shape=(224, 224, 3))
    prep = tf.keras.applications.mobilenet_v2.preprocess_input
    files = sorted(Path(image_dir).rglob("*.jpg"))
    model.predict(np.zeros((batch, 224, 224, 3), np.float32), verbose=0)   # warm-up
    infer = 0.0
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC), np.float32)
                      for f in files[i:i + batch]])
        t = time.perf_counter()
        out = model.predict(prep(x), verbose=0)
        infer += time.perf_counter() - t
        assert out.shape[1] == 1280
    total = time.perf_counter() - start
    print(json.dumps({"images": len(files), "e2e_images_per_s": len(files) / total,
                      "inference_images_per_s": len(files) / infer, "tensorflow": tf.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
