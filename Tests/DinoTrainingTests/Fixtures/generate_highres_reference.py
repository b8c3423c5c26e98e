"""Writes highres_reference.h5: what the official DINOv2 backbone does with a model trained at 224 px
when it is exported for, or run at, another resolution. The reference for HighResolutionTests.swift
(`checkpoint export --img-size`, loading weights of another grid, the high-resolution phase).

Two variants, each a group (with "overrides": this project's config keys for the same model):
"plain" (no registers, interpolate_antialias False, interpolate_offset 0.1:
the vit_small/base/large/giant defaults) and "registers" (4 registers, antialias True, offset 0.0: the
*_reg hub models). Each: a tiny official DinoVisionTransformer (width 32, depth 2, 2 heads, patch 14,
LayerScale 1, MLP) built at img_size 224 (16 x 16 positions) with random weights (the position
embedding drawn with std 1, so that interpolation errors show), and for target sizes 518 and 98:
  weights/<official name>        the 224-px state dict (float32), the model's input
  <size>/pos_embed               interpolate_pos_encoding's result for a <size>-px input:
                                 what `checkpoint export --img-size <size>` must write
  <size>/names, <size>/shapes    (strings) the state dict of DinoVisionTransformer(img_size=<size>): the keys and
                                 shapes a strict load_state_dict accepts
  <size>/at_224/cls, .../patches the same model run on the 224-px image (interpolating back from its grid):
                                 what a 224-px model must give after loading the <size>-grid weights
  <size>/cls, <size>/patches     x_norm_clstoken [1, 32] and x_norm_patchtokens [1, P, 32] of the
                                 model built at img_size <size> after a strict load of the weights with
                                 that pos_embed, on the input image below at <size> px (computed in
                                 float64, stored as float32)
The script checks, in the official code itself, that the resized model gives the same features as the
224-px model run at <size> px (runtime interpolation), within 1e-12.

The input image (float32, 3 x size x size, already normalised) is a formula both sides evaluate:
  x[c, i, j] = sin(0.05 i + 0.031 j + 1.7 c) + 0.5 cos(0.011 i j / size + c)

Regenerate (CPU PyTorch and h5py from PyPI; a checkout of facebookresearch/dinov2):
    pip install torch h5py
    python3 Tests/DinoTrainingTests/Fixtures/generate_highres_reference.py --dinov2 /path/to/dinov2
"""
import argparse
import math
import os
import sys

_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--dinov2", default=os.environ.get("DINOV2_ROOT", "."))
sys.path.insert(0, _pre.parse_known_args()[0].dinov2)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dinov2.layers import MemEffAttention, NestedTensorBlock as Block  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402
from functools import partial  # noqa: E402

WIDTH, DEPTH, HEADS, PATCH, TRAINED = 32, 2, 2, 14, 224
SIZES = [518, 98]
VARIANTS = {
    "plain": dict(num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1),
    "registers": dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
}


def build(img_size, variant):
    return DinoVisionTransformer(
        img_size=img_size, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_ratio=4,
        block_fn=partial(Block, attn_class=MemEffAttention), init_values=1.0, ffn_layer="mlp", block_chunks=0,
        **VARIANTS[variant])


def strings(values):
    encoded = [v.encode() for v in values]
    return np.array(encoded, dtype=f"S{max(len(v) for v in encoded)}")


def image(size):
    i = np.arange(size, dtype=np.float64)[:, None]
    j = np.arange(size, dtype=np.float64)[None, :]
    channels = [np.sin(0.05 * i + 0.031 * j + 1.7 * c) + 0.5 * np.cos(0.011 * i * j / size + c) for c in range(3)]
    return np.stack(channels).astype(np.float32)[None]


def features(model, x):
    with torch.no_grad():
        out = model.forward_features(torch.from_numpy(x).double())
    return out["x_norm_clstoken"].numpy(), out["x_norm_patchtokens"].numpy()


def main():
    parser = argparse.ArgumentParser(parents=[_pre])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "highres_reference.h5"))
    args = parser.parse_args()
    torch.manual_seed(0)
    with h5py.File(args.output, "w") as f:
        for variant in VARIANTS:
            group = f.create_group(variant)
            settings = VARIANTS[variant]
            group["overrides"] = strings([
                "student.arch=vit_small", f"student.embed_dim={WIDTH}", f"student.depth={DEPTH}",
                f"student.num_heads={HEADS}", f"student.patch_size={PATCH}", "student.ffn_layer=mlp",
                f"student.num_register_tokens={settings['num_register_tokens']}",
                f"student.interpolate_antialias={str(settings['interpolate_antialias']).lower()}",
                f"student.interpolate_offset={settings['interpolate_offset']}",
                f"crops.global_crops_size={TRAINED}", "crops.local_crops_size=98",
            ])
            trained = build(TRAINED, variant)
            with torch.no_grad():
                for name, tensor in trained.named_parameters():
                    std = 1.0 if name == "pos_embed" else (0.3 if tensor.dim() > 1 else 0.1)
                    # LayerScale and LayerNorm scales around 1, everything else around 0.
                    centre = 1.0 if name.endswith("gamma") or (tensor.dim() == 1 and name.endswith("weight")) else 0.0
                    tensor.copy_(torch.randn_like(tensor) * std + centre)
            state = {name: t.detach().float() for name, t in trained.state_dict().items()}
            for name, tensor in state.items():
                group.create_dataset("weights/" + name, data=tensor.numpy())
            trained = trained.double()
            trained.load_state_dict({k: v.double() for k, v in state.items()}, strict=True)
            for size in SIZES:
                x = image(size)
                with torch.no_grad():
                    tokens = torch.zeros(1, (size // PATCH) ** 2 + 1, WIDTH, dtype=torch.float64)
                    pos_embed = trained.interpolate_pos_encoding(tokens, size, size)
                resized = build(size, variant).double()
                expected = dict(resized.state_dict())
                loaded = {k: v.double() for k, v in state.items()}
                loaded["pos_embed"] = pos_embed
                resized.load_state_dict(loaded, strict=True)
                cls, patches = features(resized, x)
                runtime_cls, runtime_patches = features(trained, x)
                assert np.abs(cls - runtime_cls).max() < 1e-12 and np.abs(patches - runtime_patches).max() < 1e-12
                sub = group.create_group(str(size))
                # float32 is plenty for the test's tolerances (1e-6 and 1e-4) and halves the file.
                sub.create_dataset("pos_embed", data=pos_embed.numpy().astype(np.float32))
                sub.create_dataset("cls", data=cls.astype(np.float32))
                sub.create_dataset("patches", data=patches.astype(np.float32))
                # The resized model back at the training size (its runtime interpolation from <size>'s grid):
                # what loading <size>-grid weights into a 224-px model must give.
                back_cls, back_patches = features(resized, image(TRAINED))
                sub.create_dataset("at_224/cls", data=back_cls.astype(np.float32))
                sub.create_dataset("at_224/patches", data=back_patches.astype(np.float32))
                names = sorted(expected)
                sub["names"] = strings(names)
                sub["shapes"] = strings([",".join(str(n) for n in expected[k].shape) for k in names])
                print(f"{variant} {size}: pos_embed {tuple(pos_embed.shape)}, patches {patches.shape}, "
                      f"|cls| {np.abs(cls).mean():.3f}")


if __name__ == "__main__":
    main()
