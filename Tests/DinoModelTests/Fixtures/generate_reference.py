"""Writes backbone_reference.h5: a tiny DINOv2-shaped ViT evaluated in PyTorch (float64), the
independent reference for the Swift backbone (Tests/DinoModelTests/BackboneReferenceTests.swift).

This is a from-scratch PyTorch implementation of the DINOv2 ViT as the official
dinov2/models/vision_transformer.py defines it (tokens [CLS, registers, patches], mask-token
replacement before the position embedding, bicubic position-embedding resampling with the
official offset / antialias rules, pre-norm blocks with LayerScale, final LayerNorm), not the
official code. Two models: "mlp" (GELU MLP, non-antialiased resampling, offset 0.1) and "swiglu"
(SwiGLU FFN, antialiased resampling, offset 0, as register models). Each is run on a batch of two
8 px "global" crops with iBOT masks and three 6 px "local" crops (patch 2: 4x4 and 3x3 grids),
the loss sum(normalised tokens * R) is backpropagated, and parameters, inputs, outputs and every
parameter gradient are stored under their official names and PyTorch shapes.

Regenerate (CPU PyTorch and h5py from PyPI):
    pip install torch h5py
    python3 Tests/DinoModelTests/Fixtures/generate_reference.py
"""
import math
import os

import h5py
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)

D, DEPTH, HEADS, PATCH, REGISTERS, IMAGE = 16, 2, 2, 2, 2, 8
GRID = IMAGE // PATCH


def make_parameters(ffn):
    p = {}
    p["cls_token"] = torch.randn(1, 1, D) * 0.5
    p["pos_embed"] = torch.randn(1, 1 + GRID * GRID, D) * 0.5
    p["register_tokens"] = torch.randn(1, REGISTERS, D) * 0.5
    p["mask_token"] = torch.randn(1, D) * 0.5
    p["patch_embed.proj.weight"] = torch.randn(D, 3, PATCH, PATCH) * 0.3
    p["patch_embed.proj.bias"] = torch.randn(D) * 0.1
    hidden = 4 * D if ffn == "mlp" else ((int(4 * D * 2 / 3) + 7) // 8) * 8
    for b in range(DEPTH):
        q = f"blocks.{b}."
        p[q + "norm1.weight"] = 1 + torch.randn(D) * 0.1
        p[q + "norm1.bias"] = torch.randn(D) * 0.1
        p[q + "attn.qkv.weight"] = torch.randn(3 * D, D) * 0.3
        p[q + "attn.qkv.bias"] = torch.randn(3 * D) * 0.1
        p[q + "attn.proj.weight"] = torch.randn(D, D) * 0.3
        p[q + "attn.proj.bias"] = torch.randn(D) * 0.1
        p[q + "ls1.gamma"] = torch.rand(D) * 0.5 + 0.25
        p[q + "norm2.weight"] = 1 + torch.randn(D) * 0.1
        p[q + "norm2.bias"] = torch.randn(D) * 0.1
        if ffn == "mlp":
            p[q + "mlp.fc1.weight"] = torch.randn(hidden, D) * 0.3
            p[q + "mlp.fc1.bias"] = torch.randn(hidden) * 0.1
            p[q + "mlp.fc2.weight"] = torch.randn(D, hidden) * 0.2
            p[q + "mlp.fc2.bias"] = torch.randn(D) * 0.1
        else:
            p[q + "mlp.w12.weight"] = torch.randn(2 * hidden, D) * 0.3
            p[q + "mlp.w12.bias"] = torch.randn(2 * hidden) * 0.1
            p[q + "mlp.w3.weight"] = torch.randn(D, hidden) * 0.2
            p[q + "mlp.w3.bias"] = torch.randn(D) * 0.1
        p[q + "ls2.gamma"] = torch.rand(D) * 0.5 + 0.25
    p["norm.weight"] = 1 + torch.randn(D) * 0.1
    p["norm.bias"] = torch.randn(D) * 0.1
    return {k: v.clone().requires_grad_(True) for k, v in p.items()}


def position_embedding(p, side, offset, antialias):
    pos = p["pos_embed"]
    if side == GRID:
        return pos
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.reshape(1, GRID, GRID, D).permute(0, 3, 1, 2)
    if offset:
        scale = (side + offset) / GRID
        grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic", antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=antialias)
    assert grid.shape[-1] == side
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, side * side, D)], dim=1)


def tokens(p, images, masks, offset, antialias):
    b, _, size, _ = images.shape
    side = size // PATCH
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    if masks is not None:
        x = torch.where(masks.unsqueeze(-1), p["mask_token"].to(x.dtype).unsqueeze(0), x)
    x = torch.cat([p["cls_token"].expand(b, -1, -1), x], dim=1)
    x = x + position_embedding(p, side, offset, antialias)
    return torch.cat([x[:, :1], p["register_tokens"].expand(b, -1, -1), x[:, 1:]], dim=1)


def block(p, b, x, ffn):
    q = f"blocks.{b}."
    h = F.layer_norm(x, (D,), p[q + "norm1.weight"], p[q + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, p[q + "attn.qkv.weight"], p[q + "attn.qkv.bias"])
    n, t, _ = qkv.shape
    qkv = qkv.reshape(n, t, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
    scores = (qkv[0] @ qkv[1].transpose(-2, -1)) / math.sqrt(D // HEADS)
    a = (scores.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(n, t, D)
    x = x + p[q + "ls1.gamma"] * F.linear(a, p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
    h = F.layer_norm(x, (D,), p[q + "norm2.weight"], p[q + "norm2.bias"], eps=1e-6)
    if ffn == "mlp":
        h = F.linear(F.gelu(F.linear(h, p[q + "mlp.fc1.weight"], p[q + "mlp.fc1.bias"])),
                     p[q + "mlp.fc2.weight"], p[q + "mlp.fc2.bias"])
    else:
        x12 = F.linear(h, p[q + "mlp.w12.weight"], p[q + "mlp.w12.bias"])
        x1, x2 = x12.chunk(2, dim=-1)
        h = F.linear(F.silu(x1) * x2, p[q + "mlp.w3.weight"], p[q + "mlp.w3.bias"])
    return x + p[q + "ls2.gamma"] * h


def run(ffn, offset, antialias, out):
    p = make_parameters(ffn)
    global_images = torch.randn(2, 3, 8, 8)
    local_images = torch.randn(3, 3, 6, 6)
    masks = torch.rand(2, GRID * GRID) < 0.4
    outputs = []
    for images, m in [(global_images, masks), (local_images, None)]:
        x = tokens(p, images, m, offset, antialias)
        for b in range(DEPTH):
            x = block(p, b, x, ffn)
        outputs.append(F.layer_norm(x, (D,), p["norm.weight"], p["norm.bias"], eps=1e-6).reshape(-1, D))
    output = torch.cat(outputs, dim=0)
    weights = torch.randn_like(output)
    loss = (output * weights).sum()
    loss.backward()
    group = out.create_group(ffn)
    group.attrs["offset"] = offset
    group.attrs["antialias"] = int(antialias)
    for name, value in p.items():
        group[f"params/{name}"] = value.detach().numpy()
        group[f"grads/{name}"] = value.grad.numpy()
    group["global_images"] = global_images.numpy()
    group["local_images"] = local_images.numpy()
    group["masks"] = masks.to(torch.float64).numpy()
    group["loss_weights"] = weights.numpy()
    group["output"] = output.detach().numpy()
    group["loss"] = loss.detach().numpy()


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backbone_reference.h5")
    with h5py.File(path, "w") as out:
        out.attrs["torch_version"] = str(torch.__version__).encode()
        run("mlp", 0.1, False, out)
        run("swiglu", 0.0, True, out)
    print("wrote", path)
