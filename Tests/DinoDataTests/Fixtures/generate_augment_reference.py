"""Writes augment_reference.h5: the outputs of PIL / numpy versions of each augmentation (as
torchvision applies them to PIL images) on a small random image, the independent reference for
Tests/DinoDataTests/AugmentationTests.swift.

    resized_crop   img.crop(box).resize((11, 11), Image.BICUBIC)          (antialiased bicubic)
    brightness     ImageEnhance.Brightness(img).enhance(1.3)
    contrast       ImageEnhance.Contrast(img).enhance(0.7)
    saturation     ImageEnhance.Color(img).enhance(1.2)
    hue_plus/minus torchvision F.adjust_hue on PIL: HSV, H + trunc(f * 255) mod 256, back (f = 0.07, -0.05)
    grayscale      img.convert("L").convert("RGB")
    solarize       ImageOps.solarize(img, 128)
    blur           numpy: separable 9-tap Gaussian, sigma 1.3, reflect padding, float64, rounded

Regenerate (Pillow and h5py from PyPI; numpy):
    pip install pillow h5py
    python3 Tests/DinoDataTests/Fixtures/generate_augment_reference.py
"""
import os

import h5py
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

rng = np.random.default_rng(5)
base = rng.integers(0, 256, size=(14, 20, 3), dtype=np.uint8)
# Smooth part plus noise, so resampling and blur see structure.
yy, xx = np.mgrid[0:14, 0:20]
base[..., 0] = np.clip(xx * 12 + rng.integers(0, 30, size=(14, 20)), 0, 255)
img = Image.fromarray(base, "RGB")


def hue(image, factor):
    h, s, v = image.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h = (np_h.astype(np.int32) + int(factor * 255)) % 256  # torchvision: astype(uint8) truncates
    h = Image.fromarray(np_h.astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def blur(image, sigma, kernel=9):
    half = kernel // 2
    x = np.arange(kernel) - half
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    a = np.asarray(image).astype(np.float64)
    pad = np.pad(a, ((0, 0), (half, half), (0, 0)), mode="reflect")
    a = sum(w[k] * pad[:, k:k + a.shape[1]] for k in range(kernel))
    pad = np.pad(a, ((half, half), (0, 0), (0, 0)), mode="reflect")
    a = sum(w[k] * pad[k:k + a.shape[0]] for k in range(kernel))
    return np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)


outputs = {
    "input": np.asarray(img),
    "resized_crop": np.asarray(img.crop((3, 2, 3 + 15, 2 + 10)).resize((11, 11), Image.BICUBIC)),
    "brightness": np.asarray(ImageEnhance.Brightness(img).enhance(1.3)),
    "contrast": np.asarray(ImageEnhance.Contrast(img).enhance(0.7)),
    "saturation": np.asarray(ImageEnhance.Color(img).enhance(1.2)),
    "hue_plus": np.asarray(hue(img, 0.07)),
    "hue_minus": np.asarray(hue(img, -0.05)),
    "grayscale": np.asarray(img.convert("L").convert("RGB")),
    "solarize": np.asarray(ImageOps.solarize(img, 128)),
    "blur": blur(img, 1.3),
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "augment_reference.h5")
with h5py.File(path, "w") as f:
    for name, value in outputs.items():
        f[name] = value.astype(np.float64)
print("wrote", path)
