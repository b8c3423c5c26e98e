"""Writes step_reference.h5: three DINOv2 training steps of a tiny model in PyTorch (float64), the
independent reference for Tests/DinoTrainingTests/StepReferenceTests.swift.

A from-scratch PyTorch implementation of the DINOv2 recipe as the paper and the official
dinov2/train/ssl_meta_arch.py describe it (written from that description, not the official code):
ViT backbone (width 16, depth 2, 2 heads, patch 2, 1 register, position embedding for 8 px, GELU
MLP), a shared 3-layer DINO head (hidden 24,
bottleneck 8, 12 prototypes, weight-normalised last layer), teacher targets by softmax centering
(center momentum 0.9, applied one step late) or Sinkhorn-Knopp (3 iterations), DINO CLS loss over
2 global + 2 local crops per image, iBOT loss on masked global-crop patches, KoLeo on each view,
per-sub-module clipping at 3.0, AdamW (0.9, 0.999) with layer-wise lr decay 0.9 and patch-embed
multiplier 0.2 and the official weight-decay exemptions, teacher EMA. No stochastic depth.
Two images per step: global crops 8 px, local crops 4 px, fixed masks. Stored: initial
parameters, inputs, masks, schedule values, each step's four losses, step 1's clipped student
gradients, and student and teacher parameters after step 3.

Regenerate (CPU PyTorch and h5py from PyPI):
    pip install torch h5py
    python3 Tests/DinoTrainingTests/Fixtures/generate_step_reference.py
"""
import math
import os

import h5py
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
D, DEPTH, HEADS, PATCH, REGISTERS, IMAGE = 16, 2, 2, 2, 1, 8
GRID = IMAGE // PATCH
HIDDEN, BOTTLENECK, K = 24, 8, 12
B, N_LOCAL, LOCAL = 2, 2, 4
STUDENT_TEMP = 0.1


def backbone_parameters(gen):
    p = {"cls_token": torch.randn(1, 1, D, generator=gen) * 0.5,
         "pos_embed": torch.randn(1, 1 + GRID * GRID, D, generator=gen) * 0.5,
         "register_tokens": torch.randn(1, REGISTERS, D, generator=gen) * 0.5,
         "mask_token": torch.randn(1, D, generator=gen) * 0.5,
         "patch_embed.proj.weight": torch.randn(D, 3, PATCH, PATCH, generator=gen) * 0.3,
         "patch_embed.proj.bias": torch.randn(D, generator=gen) * 0.1}
    for b in range(DEPTH):
        q = f"blocks.{b}."
        p[q + "norm1.weight"] = 1 + torch.randn(D, generator=gen) * 0.1
        p[q + "norm1.bias"] = torch.randn(D, generator=gen) * 0.1
        p[q + "attn.qkv.weight"] = torch.randn(3 * D, D, generator=gen) * 0.3
        p[q + "attn.qkv.bias"] = torch.randn(3 * D, generator=gen) * 0.1
        p[q + "attn.proj.weight"] = torch.randn(D, D, generator=gen) * 0.3
        p[q + "attn.proj.bias"] = torch.randn(D, generator=gen) * 0.1
        p[q + "ls1.gamma"] = torch.rand(D, generator=gen) * 0.5 + 0.25
        p[q + "norm2.weight"] = 1 + torch.randn(D, generator=gen) * 0.1
        p[q + "norm2.bias"] = torch.randn(D, generator=gen) * 0.1
        p[q + "mlp.fc1.weight"] = torch.randn(4 * D, D, generator=gen) * 0.3
        p[q + "mlp.fc1.bias"] = torch.randn(4 * D, generator=gen) * 0.1
        p[q + "mlp.fc2.weight"] = torch.randn(D, 4 * D, generator=gen) * 0.2
        p[q + "mlp.fc2.bias"] = torch.randn(D, generator=gen) * 0.1
        p[q + "ls2.gamma"] = torch.rand(D, generator=gen) * 0.5 + 0.25
    p["norm.weight"] = 1 + torch.randn(D, generator=gen) * 0.1
    p["norm.bias"] = torch.randn(D, generator=gen) * 0.1
    return p


def head_parameters(gen):
    return {"mlp.0.weight": torch.randn(HIDDEN, D, generator=gen) * 0.3, "mlp.0.bias": torch.randn(HIDDEN, generator=gen) * 0.1,
            "mlp.2.weight": torch.randn(HIDDEN, HIDDEN, generator=gen) * 0.3, "mlp.2.bias": torch.randn(HIDDEN, generator=gen) * 0.1,
            "mlp.4.weight": torch.randn(BOTTLENECK, HIDDEN, generator=gen) * 0.3,
            "mlp.4.bias": torch.randn(BOTTLENECK, generator=gen) * 0.1,
            "last_layer.weight_g": 1 + torch.rand(K, 1, generator=gen) * 0.5,
            "last_layer.weight_v": torch.randn(K, BOTTLENECK, generator=gen) * 0.4}


def backbone(p, images, masks):
    b, _, size, _ = images.shape
    side = size // PATCH
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    if masks is not None:
        x = torch.where(masks.unsqueeze(-1), p["mask_token"].unsqueeze(0), x)
    x = torch.cat([p["cls_token"].expand(b, -1, -1), x], dim=1)
    pos = p["pos_embed"]
    if side != GRID:
        grid = pos[:, 1:].reshape(1, GRID, GRID, D).permute(0, 3, 1, 2)
        scale = (side + 0.1) / GRID
        grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, side * side, D)], dim=1)
    x = x + pos
    x = torch.cat([x[:, :1], p["register_tokens"].expand(b, -1, -1), x[:, 1:]], dim=1)
    for blk in range(DEPTH):
        q = f"blocks.{blk}."
        h = F.layer_norm(x, (D,), p[q + "norm1.weight"], p[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, p[q + "attn.qkv.weight"], p[q + "attn.qkv.bias"])
        n, t, _ = qkv.shape
        qkv = qkv.reshape(n, t, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] @ qkv[1].transpose(-2, -1)) / math.sqrt(D // HEADS)).softmax(-1) @ qkv[2]
        x = x + p[q + "ls1.gamma"] * F.linear(a.transpose(1, 2).reshape(n, t, D), p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), p[q + "norm2.weight"], p[q + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, p[q + "mlp.fc1.weight"], p[q + "mlp.fc1.bias"])), p[q + "mlp.fc2.weight"], p[q + "mlp.fc2.bias"])
        x = x + p[q + "ls2.gamma"] * h
    return F.layer_norm(x, (D,), p["norm.weight"], p["norm.bias"], eps=1e-6)


def head(h, x):
    x = F.gelu(F.linear(x, h["mlp.0.weight"], h["mlp.0.bias"]))
    x = F.gelu(F.linear(x, h["mlp.2.weight"], h["mlp.2.bias"]))
    x = F.linear(x, h["mlp.4.weight"], h["mlp.4.bias"])
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = h["last_layer.weight_v"]
    w = h["last_layer.weight_g"] * v / v.norm(dim=1, keepdim=True)
    return F.linear(x, w)


def sinkhorn(t, temp):
    q = torch.exp(t / temp).t()
    n = q.shape[1]
    q = q / q.sum()
    for _ in range(3):
        q = q / q.sum(dim=1, keepdim=True) / q.shape[0]
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).t()


def cross_entropy(q, s):
    return -(q * F.log_softmax(s / STUDENT_TEMP, dim=-1)).sum(-1)


def koleo(x):
    y = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    g = y @ y.t()
    g.fill_diagonal_(-1)
    nn = g.argmax(dim=1)
    d = (y - y[nn] + 1e-8).norm(dim=-1)
    return -torch.log(d + 1e-8).mean()


def groups(name, backbone_part):
    if backbone_part:
        if any(k in name for k in ["pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens"]):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = DEPTH + 1
        lr_mult = 0.9 ** (DEPTH + 1 - layer) * (0.2 if "patch_embed" in name else 1)
    else:
        lr_mult = 1.0
    wd_mult = 0.0 if (name.endswith(".bias") or "norm" in name or "gamma" in name) else 1.0
    return lr_mult, wd_mult, ("last_layer" in name)


def run(centering, out):
    gen = torch.Generator().manual_seed(7)
    student = {("b", k): v for k, v in backbone_parameters(gen).items()}
    student.update({("h", k): v for k, v in head_parameters(gen).items()})
    teacher = {k: v.clone() for k, v in student.items()}
    for v in student.values():
        v.requires_grad_(True)
    global_images = torch.randn(2 * B, 3, IMAGE, IMAGE, generator=gen)
    local_images = torch.randn(N_LOCAL * B, 3, LOCAL, LOCAL, generator=gen)
    masks = torch.zeros(2 * B, GRID * GRID, dtype=torch.bool)
    masks[0, [0, 1, 4, 5]] = True
    masks[3, [5, 6, 9, 10, 11, 14]] = True
    schedule = [(0.01, 0.0, 0.04, 0.9, 0.05), (0.02, 0.02, 0.05, 0.95, 0.06), (0.015, 0.015, 0.06, 0.97, 0.07)]
    group = out.create_group(centering)
    group["global_images"] = global_images.numpy()
    group["local_images"] = local_images.numpy()
    group["masks"] = masks.to(torch.float64).numpy()
    group["schedule"] = torch.tensor(schedule).numpy()  # lr, last-layer lr, wd, momentum, teacher temperature
    for (part, name), v in student.items():
        group[f"initial/{'backbone' if part == 'b' else 'dino_head'}/{name}"] = v.detach().numpy()
    center = torch.zeros(K)
    pending = None
    patch_center = torch.zeros(K)
    patch_pending = None
    m_state = {k: torch.zeros_like(v) for k, v in student.items()}
    v_state = {k: torch.zeros_like(v) for k, v in student.items()}
    masked_idx = masks.flatten().nonzero().flatten()
    weights = (1 / masks.sum(-1).clamp(min=1).double()).unsqueeze(-1).expand_as(masks).flatten()[masked_idx]
    losses = []
    for step, (lr, last_lr, wd, momentum, temp) in enumerate(schedule):
        bp = {k: v for (part, k), v in student.items() if part == "b"}
        hp = {k: v for (part, k), v in student.items() if part == "h"}
        tb = {k: v for (part, k), v in teacher.items() if part == "b"}
        th = {k: v for (part, k), v in teacher.items() if part == "h"}
        with torch.no_grad():
            t_out = backbone(tb, global_images, None)
            t_cls = t_out[:, 0]
            t_patch = t_out[:, 1 + REGISTERS:].reshape(-1, D)[masked_idx]
            t_logits = head(th, torch.cat([t_cls, t_patch]))
            t_cls_logits, t_patch_logits = t_logits[:2 * B], t_logits[2 * B:]
            if centering == "centering":
                if pending is not None:
                    center = center * 0.9 + pending * 0.1
                    patch_center = patch_center * 0.9 + patch_pending * 0.1
                q_cls = F.softmax((t_cls_logits - center) / temp, dim=-1)
                q_patch = F.softmax((t_patch_logits - patch_center) / temp, dim=-1)
                pending = t_cls_logits.sum(0) / t_cls_logits.shape[0]
                patch_pending = t_patch_logits.mean(0)
            else:
                q_cls = sinkhorn(t_cls_logits, temp)
                q_patch = sinkhorn(t_patch_logits, temp)
        g_out = backbone(bp, global_images, masks)
        l_out = backbone(bp, local_images, None)
        s_global_cls, s_local_cls = g_out[:, 0], l_out[:, 0]
        s_patch = g_out[:, 1 + REGISTERS:].reshape(-1, D)[masked_idx]
        s_logits = head(hp, torch.cat([s_global_cls, s_local_cls, s_patch]))
        s_global, s_local, s_masked = s_logits[:2 * B], s_logits[2 * B:2 * B + N_LOCAL * B], s_logits[2 * B + N_LOCAL * B:]
        q1, q2 = q_cls[:B], q_cls[B:]
        n_terms = 2 + max(N_LOCAL * 2, 1)
        dino_global = (cross_entropy(q2, s_global[:B]).mean() + cross_entropy(q1, s_global[B:]).mean()) / n_terms
        dino_local = sum(cross_entropy(q, s_local[c * B:(c + 1) * B]).mean() for c in range(N_LOCAL) for q in (q1, q2)) / n_terms
        ibot = (cross_entropy(q_patch, s_masked) * weights).sum() / (2 * B)
        ko = 0.1 * (koleo(s_global_cls[:B]) + koleo(s_global_cls[B:]))
        loss = dino_global + dino_local + ibot + ko
        losses.append([dino_local.item(), dino_global.item(), ibot.item(), ko.item()])
        for v in student.values():
            v.grad = None
        loss.backward()
        with torch.no_grad():
            for part in ("b", "h"):
                keys = [k for k in student if k[0] == part]
                norm = torch.sqrt(sum((student[k].grad ** 2).sum() for k in keys))
                coefficient = 3.0 / (norm + 1e-6)
                if coefficient < 1:
                    for k in keys:
                        student[k].grad.mul_(coefficient)
            if step == 0:
                for (part, name), v in student.items():
                    group[f"gradients/{'backbone' if part == 'b' else 'dino_head'}/{name}"] = v.grad.numpy()
            for key, p in student.items():
                lr_mult, wd_mult, last = groups(key[1], key[0] == "b")
                rate = (last_lr if last else lr) * lr_mult
                p.mul_(1 - rate * wd * wd_mult)
                m_state[key].mul_(0.9).add_(p.grad, alpha=0.1)
                v_state[key].mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                t = step + 1
                denom = (v_state[key].sqrt() / math.sqrt(1 - 0.999 ** t)).add_(1e-8)
                p.addcdiv_(m_state[key], denom, value=-rate / (1 - 0.9 ** t))
            for key in student:
                teacher[key].mul_(momentum).add_(student[key].detach(), alpha=1 - momentum)
    group["losses"] = torch.tensor(losses).numpy()
    for (part, name), v in student.items():
        group[f"final_student/{'backbone' if part == 'b' else 'dino_head'}/{name}"] = v.detach().numpy()
        group[f"final_teacher/{'backbone' if part == 'b' else 'dino_head'}/{name}"] = teacher[(part, name)].numpy()


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "step_reference.h5")
    with h5py.File(path, "w") as out:
        run("centering", out)
        run("sinkhorn_knopp", out)
    print("wrote", path)
