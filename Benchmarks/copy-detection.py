#!/usr/bin/env python3
"""Copy detection with a checkpoint's features: can `curate`'s rule (cosine similarity above a threshold)
find augmented copies among the embedded dataset's images?

Builds a planted pool: 50 images of each of the 8 classes of the embedded dataset (400; --split train,
the default, or val: images a model trained on the embedded dataset has not seen), plus
40 copies of every 10th one, in turn an exact copy, a JPEG re-encoding (quality 70), a crop of 85 % of
the area at a random place resized back, and a colour shift (brightness x1.2, saturation x0.7). Embeds it
with `dinov2-fsdp embed --scales` (the CLS features `curate`'s copy rule uses: by default the multi-scale
descriptor at 1, 1.5 and 2 times the model's input size, or the scales of the checkpoint's calibration),
then prints per kind of copy the lowest
similarity to its source, the highest similarities between different images, and recall and precision
of the copy pairs at every threshold, with the best threshold's. With --calibrate it first runs
`dinov2-fsdp calibrate-copies` on other images of the training split (the 100th to 149th of each class: not
in either pool) and reports the pool at that threshold, the one `curate --copy-checkpoint` then uses by
default; without it, at the threshold of a calibration already beside the checkpoint, if any. Needs numpy,
h5py, pillow.
Usage: Benchmarks/copy-detection.py --checkpoint RUN [--split val] [--calibrate] [--scales 1,1.5,2]
       [--work DIR] [--binary .build/release/dinov2-fsdp]
"""
import argparse, io, os, random, subprocess, sys

import h5py
import numpy as np
from PIL import Image, ImageEnhance

parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", required=True)
parser.add_argument("--work", default="runs/copy-detection")
parser.add_argument("--split", default="train", choices=["train", "val"])
parser.add_argument("--binary", default=".build/release/dinov2-fsdp")
parser.add_argument("--calibrate", action="store_true")
parser.add_argument("--scales", help="input scales of the features (default: the calibration's, else 1,1.5,2)")
args = parser.parse_args()
os.makedirs(args.work, exist_ok=True)
data = subprocess.run([args.binary, "data", "embedded"], check=True, capture_output=True, text=True).stdout.strip()
classes = sorted(os.listdir(data + "/" + args.split))
calibration_file = (args.checkpoint + ".copy-calibration.json" if os.path.isfile(args.checkpoint)
                    else args.checkpoint + "/copy-calibration.json")
if args.calibrate:
    held_out = [f"{data}/train/{c}/{i:05d}.png" for c in sorted(os.listdir(data + "/train")) for i in range(100, 150)]
    with open(args.work + "/calibration-images.txt", "w") as f:
        f.write("\n".join(held_out) + "\n")
    subprocess.run([args.binary, "calibrate-copies", "--checkpoint", args.checkpoint, "--images",
                    args.work + "/calibration-images.txt"] + (["--scales", args.scales] if args.scales else []),
                   check=True)
calibration = None
if os.path.exists(calibration_file):
    import json
    calibration = json.load(open(calibration_file))
    calibrated_scales = ",".join(f"{v:g}" for v in calibration.get("scales", [1]))
    if args.scales and args.scales != calibrated_scales:
        print(f"{calibration_file} is for scales {calibrated_scales}, not {args.scales}: not reported")
        calibration = None
    args.scales = args.scales or calibrated_scales
args.scales = args.scales or "1,1.5,2"
pool = [f"{data}/{args.split}/{c}/{i:05d}.png" for c in classes for i in range(50)]
kinds = ["exact", "jpeg q70", "crop 85% area", "colour shift"]
rng = random.Random(0)
copies = []
for j, source in enumerate(pool[::10]):
    image = Image.open(source).convert("RGB")
    kind = j % 4
    if kind == 0:
        copy = image.copy()
    elif kind == 1:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=70)
        copy = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    elif kind == 2:
        w, h = image.size
        side = int(w * 0.85 ** 0.5)
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        copy = image.crop((x, y, x + side, y + side)).resize((w, h), Image.BILINEAR)
    else:
        copy = ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(1.2)).enhance(0.7)
    path = f"{args.work}/copy{j:03d}.png"
    copy.save(path)
    copies.append((os.path.abspath(path), pool.index(source), kind))
with open(args.work + "/pool.txt", "w") as f:
    f.write("\n".join(pool + [c[0] for c in copies]) + "\n")
features = args.work + "/pool.h5"
subprocess.run([args.binary, "embed", "--checkpoint", args.checkpoint, "--data", args.work + "/pool.txt",
                "--output", features, "--scales", args.scales], check=True, capture_output=True)
x = h5py.File(features, "r")["cls"][:].astype(np.float64)
x /= np.linalg.norm(x, axis=1, keepdims=True)
s = x @ x.T
n = len(x)
truth = {(source, len(pool) + j): kind for j, (_, source, kind) in enumerate(copies)}
upper = np.triu_indices(n, 1)
is_copy = np.array([(i, j) in truth for i, j in zip(*upper)])
values = s[upper]
print(f"checkpoint {args.checkpoint}, scales {args.scales}: {n} images, {len(truth)} copy pairs")
for kind, name in enumerate(kinds):
    sims = [s[i, j] for (i, j), k in truth.items() if k == kind]
    print(f"  {name:14s} similarity to its source: min {min(sims):.3f} median {np.median(sims):.3f}")
others = np.sort(values[~is_copy])[::-1]
print(f"  different images: max {others[0]:.3f}, 10th {others[9]:.3f}, 100th {others[99]:.3f}, "
      f"median {np.median(others):.3f}")
best = (0, 0, 0, 0)
for threshold in np.arange(0.30, 1.0, 0.01):
    found = values > threshold
    hits = (found & is_copy).sum()
    recall, precision = hits / is_copy.sum(), hits / max(1, found.sum())
    if min(recall, precision) > min(best[1], best[2]):
        best = (threshold, recall, precision, found.sum())
    if abs(threshold * 20 - round(threshold * 20)) < 1e-6:
        print(f"  threshold {threshold:.2f}: recall {recall:.3f} precision {precision:.3f} ({found.sum()} pairs)")
print(f"best threshold {best[0]:.2f}: recall {best[1]:.3f} precision {best[2]:.3f}")
if calibration:
    threshold = calibration["threshold"]
    found = values > threshold
    hits = (found & is_copy).sum()
    print(f"calibrated threshold {threshold:.4f} ({calibration_file}, curate's default for this model): "
          f"recall {hits / is_copy.sum():.3f} precision {hits / max(1, found.sum()):.3f} ({found.sum()} pairs)")
