"""Augmented views of the real fruit photos, in the Fruits-360 layout the app is built from.

The photos are OpenCV's apple.jpg, orange.jpg and fruits.jpg (tests/data/opencv-doc/, as Debian's
opencv-doc ships them); REGIONS says where each fruit is. Each view is a random square crop of a
region, turned, mirrored, lit, blurred, resized and JPEG-compressed as a phone photo might be;
view i of a region is the same for any --train/--test (its own seeded generator), so a larger set
keeps the smaller one's views. The first --train views of each region go to Training/<Label>/,
the next --test to Test/<Label>/: the app indexes the first and is measured on the second
(tests/test_trained.rs, benches/app_accuracy.sh).

What this measures is how well the index names new views of photos it holds (framing, light,
size, compression), not new fruit: a region's Test views are of the same fruit as its Training
views. Only Orange has two photos.

Run: python tests/app_views.py OUT [--train 8] [--test 12]   (needs Pillow and numpy)
"""
import argparse
import hashlib
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

PHOTOS = Path(__file__).resolve().parent / "data" / "opencv-doc"

# (label, photo, box (left, top, right, bottom) of the fruit in it). Labels are Fruits-360's.
REGIONS = [
    ("Apple", "apple.jpg", (40, 10, 470, 500)),
    ("Orange", "orange.jpg", (30, 50, 470, 500)),
    ("Orange", "fruits.jpg", (75, 45, 345, 470)),
    ("Lime", "fruits.jpg", (325, 120, 512, 300)),
    ("Lemon", "fruits.jpg", (322, 250, 512, 480)),
    ("Kiwi", "fruits.jpg", (0, 278, 120, 480)),
    ("Banana", "fruits.jpg", (0, 100, 90, 280)),
    ("Cabbage red", "fruits.jpg", (270, 0, 512, 120)),
]


def rng_for(label, photo, i):
    """View i of a region: its own generator, whatever else is made."""
    seed = hashlib.sha256(f"{label}|{photo}|{i}".encode()).digest()
    return np.random.default_rng(int.from_bytes(seed[:8], "little"))


def view(img, box, rng):
    """One augmented view of the fruit in `box`, as JPEG bytes."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    side = int(min(w, h) * rng.uniform(0.35, 1.0))
    x = left + int(rng.uniform(0, w - side + 1))
    y = top + int(rng.uniform(0, h - side + 1))
    v = img.crop((x, y, x + side, y + side))
    # Turned, then cut to the square inside the turned one: no corners of fill.
    angle = rng.uniform(-25, 25)
    v = v.rotate(angle, resample=Image.BICUBIC)
    a = math.radians(abs(angle))
    inner = int(side / (math.cos(a) + math.sin(a)))
    off = (side - inner) // 2
    v = v.crop((off, off, off + inner, off + inner))
    if rng.uniform() < 0.5:
        v = v.transpose(Image.FLIP_LEFT_RIGHT)
    v = ImageEnhance.Brightness(v).enhance(rng.uniform(0.7, 1.3))
    v = ImageEnhance.Contrast(v).enhance(rng.uniform(0.7, 1.3))
    v = ImageEnhance.Color(v).enhance(rng.uniform(0.7, 1.3))
    if rng.uniform() < 0.3:
        v = v.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    size = int(rng.uniform(112, 320))
    v = v.resize((size, size), Image.BICUBIC)
    out = io.BytesIO()
    v.save(out, format="JPEG", quality=int(rng.uniform(60, 95)))
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=8, help="views per region indexed (Training)")
    ap.add_argument("--test", type=int, default=12, help="views per region held out (Test)")
    a = ap.parse_args()
    photos = {name: Image.open(PHOTOS / name).convert("RGB") for name in sorted({r[1] for r in REGIONS})}
    written = 0
    for label, photo, box in REGIONS:
        stem = Path(photo).stem
        for i in range(a.train + a.test):
            split = "Training" if i < a.train else "Test"
            path = a.out / split / label / f"{stem}_{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(view(photos[photo], box, rng_for(label, photo, i)))
            written += 1
    print(f"{written} views of {len(REGIONS)} regions ({a.train} Training + {a.test} Test each) in {a.out}")


if __name__ == "__main__":
    main()
