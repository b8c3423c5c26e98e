"""Writes distillation_reference.h5: three distillation steps (DINOv2 section 5) computed with the
official DINOv2 modules, the reference for Tests/DinoTrainingTests/DistillationTests.swift.

The official code has no distillation; the paper says what changes against SSLMetaArch.forward_backward:
the targets come from a frozen teacher of another architecture (never updated), the student learns with
the same objective (DINO, iBOT, KoLeo), masking and stochastic depth are removed, the iBOT loss covers
the two global crops (here: every patch token of both, each crop's tokens weighted 1 / N as the official
iBOTPatchLoss.forward_masked does for a full mask), and a spare EMA of the student is kept
(SSLMetaArch.update_teacher's update, applied to a copy of the student). Everything else is the
official code as in generate_official_parity.py (imported from there: crops, schedules, AdamW groups).

Two variants, each a group: Sinkhorn-Knopp with a shared head on both sides (teacher: SwiGLU, 2
registers, width 48, depth 3; student: MLP, width 32, depth 2), and softmax centering with separate
iBOT heads (teacher: MLP, width 48; student: SwiGLU, 2 registers, width 32). Each group holds both
configs as overrides of this project's keys, the initial student and the frozen teacher in the official
names, the crops, the schedule values, each step's four loss terms, the clipped student gradients after
step 1, and the student and the spare EMA after step 3 (final_student, final_teacher).
float64 throughout, from float32 initial values and crops, as the parity fixture.

Regenerate (CPU PyTorch, torchvision and h5py from PyPI; a checkout of facebookresearch/dinov2):
    python3 Tests/DinoTrainingTests/Fixtures/generate_distillation_reference.py --dinov2 /path/to/dinov2
"""
import argparse
import os
import random
import sys
import tempfile
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate_official_parity as parity  # noqa: E402  (puts --dinov2 on the path)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dinov2.layers import DINOHead, MemEffAttention, NestedTensorBlock as Block  # noqa: E402
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay  # noqa: E402

P = parity
TEACHER_WIDTH, TEACHER_DEPTH, TEACHER_HEADS, TEACHER_HIDDEN = 48, 3, 3, 40

VARIANTS = {
    "sinkhorn_shared": dict(centering="sinkhorn_knopp", separate=False,
                            teacher=dict(registers=2, ffn="swiglufused"), student=dict(registers=0, ffn="mlp")),
    "centering_separate": dict(centering="centering", separate=True,
                               teacher=dict(registers=0, ffn="mlp"), student=dict(registers=2, ffn="swiglufused")),
}


def model_overrides(width, depth, heads, hidden, arch, separate):
    return [
        "student.arch=vit_small", f"student.embed_dim={width}", f"student.depth={depth}",
        f"student.num_heads={heads}", f"student.num_register_tokens={arch['registers']}",
        f"student.ffn_layer={arch['ffn']}", f"dino.head_hidden_dim={hidden}", f"ibot.head_hidden_dim={hidden}",
        f"ibot.separate_head={'true' if separate else 'false'}",
    ]


def student_overrides(v):
    """The parity run's keys with this variant's student (the teacher's are added for the teacher's run)."""
    base = P.overrides(dict(centering=v["centering"], registers=v["student"]["registers"], ffn=v["student"]["ffn"],
                            separate=v["separate"]))
    return base


def teacher_overrides(v):
    return student_overrides(v) + model_overrides(TEACHER_WIDTH, TEACHER_DEPTH, TEACHER_HEADS, TEACHER_HIDDEN,
                                                  v["teacher"], v["separate"])


def build_model(width, depth, heads, hidden, arch, separate):
    backbone = DinoVisionTransformer(img_size=P.GLOBAL, patch_size=P.PATCH, embed_dim=width, depth=depth,
                                     num_heads=heads, mlp_ratio=4, block_fn=partial(Block, attn_class=MemEffAttention),
                                     init_values=P.LAYERSCALE, ffn_layer=arch["ffn"], block_chunks=0,
                                     drop_path_rate=0.0, drop_path_uniform=True,
                                     num_register_tokens=arch["registers"], interpolate_offset=0.1,
                                     interpolate_antialias=False)
    head = partial(DINOHead, in_dim=width, out_dim=P.PROTOTYPES, hidden_dim=hidden, bottleneck_dim=P.BOTTLENECK,
                   nlayers=3)
    model = {"backbone": backbone, "dino_head": head()}
    if separate:
        model["ibot_head"] = head()
    model = nn.ModuleDict(model)
    with torch.no_grad():  # vary what the official init sets to constants, as the parity fixture does
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.uniform_(0.8, 1.6)
            elif name.endswith("mask_token") or name.endswith("cls_token") or name.endswith("register_tokens"):
                p.normal_(0, 0.5)
            elif name.endswith(".bias"):
                p.normal_(0, 0.1)
            elif "norm" in name or name.endswith(".gamma"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.double()


def forward_backward(student, teacher, data, temp, v, dino_loss, ibot_loss, koleo_loss):
    """One distillation step's losses and backward; returns the four loss terms."""
    global_crops, local_crops = data["collated_global_crops"], data["collated_local_crops"]
    n_global_terms, n_local_terms = 2, max(P.N_LOCAL * 2, 1)
    with torch.no_grad():
        out = teacher.backbone(global_crops, is_training=True)
        cls = out["x_norm_clstoken"].chunk(2)
        cls = torch.cat((cls[1], cls[0]))
        patches = out["x_norm_patchtokens"].flatten(0, 1)  # every patch of the global crops
        n_cls, n_patches = cls.shape[0], patches.shape[0]
        if v["separate"]:
            teacher_cls, teacher_patches = teacher.dino_head(cls), teacher.ibot_head(patches)
        else:
            tokens = teacher.dino_head(torch.cat((cls, patches)))
            teacher_cls, teacher_patches = tokens[:n_cls], tokens[n_cls:]
        if v["centering"] == "centering":
            dino_targets = dino_loss.softmax_center_teacher(teacher_cls, teacher_temp=temp).view(2, -1, P.PROTOTYPES)
            dino_loss.update_center(teacher_cls)
            ibot_targets = ibot_loss.softmax_center_teacher(teacher_patches.unsqueeze(0), teacher_temp=temp).squeeze(0)
            # As SSLMetaArch passes them: [1, M, K] (the center is the mean over the M rows).
            ibot_loss.update_center(teacher_patches.unsqueeze(0))
        else:
            dino_targets = dino_loss.sinkhorn_knopp_teacher(teacher_cls, teacher_temp=temp).view(2, -1, P.PROTOTYPES)
            ibot_targets = ibot_loss.sinkhorn_knopp_teacher(
                teacher_patches, teacher_temp=temp, n_masked_patches_tensor=torch.tensor([n_patches]))

    # No masks, no drop path (the models are built with drop_path_rate 0).
    student_global = student.backbone(global_crops, masks=None, is_training=True)
    student_local = student.backbone(local_crops, masks=None, is_training=True)
    local_cls, global_cls = student_local["x_norm_clstoken"], student_global["x_norm_clstoken"]
    student_patches = student_global["x_norm_patchtokens"].flatten(0, 1)
    inputs = [local_cls, global_cls] + ([] if v["separate"] else [student_patches])
    outputs = student.dino_head(torch.cat(inputs)).split([x.shape[0] for x in inputs])
    local_after, global_after = outputs[0], outputs[1]
    patches_after = student.ibot_head(student_patches) if v["separate"] else outputs[2]

    dino_local = dino_loss(student_output_list=local_after.chunk(P.N_LOCAL),
                           teacher_out_softmaxed_centered_list=dino_targets) / (n_global_terms + n_local_terms)
    dino_global = dino_loss(student_output_list=[global_after],
                            teacher_out_softmaxed_centered_list=[dino_targets.flatten(0, 1)]) * 2 / (
        n_global_terms + n_local_terms)
    koleo = P.KOLEO * sum(koleo_loss(p) for p in global_cls.chunk(2))
    full_masks = torch.ones(global_crops.shape[0], n_patches // global_crops.shape[0], dtype=torch.bool)
    ibot = ibot_loss.forward_masked(patches_after, ibot_targets, student_masks_flat=full_masks,
                                    n_masked_patches=n_patches) * 2 * (1.0 / 2)
    (dino_local + dino_global + koleo + ibot).backward()
    return [dino_local.item(), dino_global.item(), ibot.item(), koleo.item()]


def run(name, v, out):
    torch.manual_seed(13)
    random.seed(13)
    np.random.seed(13)
    student = build_model(P.WIDTH, P.DEPTH, P.HEADS, P.HIDDEN, v["student"], v["separate"])
    teacher = build_model(TEACHER_WIDTH, TEACHER_DEPTH, TEACHER_HEADS, TEACHER_HIDDEN, v["teacher"], v["separate"])
    for p in teacher.parameters():
        p.requires_grad = False
    ema = build_model(P.WIDTH, P.DEPTH, P.HEADS, P.HIDDEN, v["student"], v["separate"])
    ema.load_state_dict(student.state_dict())
    for p in ema.parameters():
        p.requires_grad = False
    data = P.batch()
    group = out.create_group(name)
    for key, values in (("overrides", student_overrides(v)), ("teacher_overrides", teacher_overrides(v))):
        encoded = [k.encode() for k in values]
        group[key] = np.array(encoded, dtype=f"S{max(len(k) for k in encoded)}")
    group["global_crops"] = data["collated_global_crops"].numpy()
    group["local_crops"] = data["collated_local_crops"].numpy()
    for part, module in student.items():
        for key, p in module.state_dict().items():
            group[f"initial/{part}/{key}"] = p.numpy()
    for part, module in teacher.items():
        for key, p in module.state_dict().items():
            group[f"frozen_teacher/{part}/{key}"] = p.numpy()

    params = []
    for module in student.values():
        params += fuse_params_groups(get_params_groups_with_decay(module, lr_decay_rate=P.LAYER_DECAY,
                                                                  patch_embed_lr_mult=P.PATCH_EMBED_MULT))
    optimizer = torch.optim.AdamW(params, betas=(0.9, 0.999))
    dino_loss, ibot_loss, koleo_loss = DINOLoss(P.PROTOTYPES), iBOTPatchLoss(P.PROTOTYPES), KoLeoLoss()
    values = P.schedules()
    group["schedule"] = np.array(values, dtype=np.float64)
    losses = []
    for step, (lr, last_lr, wd, momentum, temp) in enumerate(values):
        for g in optimizer.param_groups:
            g["weight_decay"] = wd * g["wd_multiplier"]
            g["lr"] = (last_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        optimizer.zero_grad(set_to_none=True)
        losses.append(forward_backward(student, teacher, data, temp, v, dino_loss, ibot_loss, koleo_loss))
        for module in student.values():
            nn.utils.clip_grad_norm_(module.parameters(), P.CLIP)
        if step == 0:
            for part, module in student.items():
                for key, p in module.named_parameters():
                    # The mask token takes no part without masks (torch leaves its grad None).
                    grad = p.grad if p.grad is not None else torch.zeros_like(p)
                    group[f"gradients/{part}/{key}"] = grad.numpy()
        optimizer.step()
        with torch.no_grad():  # the spare EMA of the student: SSLMetaArch.update_teacher's update
            s, t = list(student.parameters()), list(ema.parameters())
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, s, alpha=1 - momentum)
    group["losses"] = np.array(losses, dtype=np.float64)
    for part in student.keys():
        for key, p in student[part].state_dict().items():
            group[f"final_student/{part}/{key}"] = p.numpy()
        for key, p in ema[part].state_dict().items():
            group[f"final_teacher/{part}/{key}"] = p.numpy()
    print(name, "losses per step (dino local, dino global, ibot, koleo):", np.array(losses).round(5).tolist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[P._pre])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "distillation_reference.h5"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
    with h5py.File(args.output, "w") as out:
        for name, variant in VARIANTS.items():
            run(name, variant, out)
    print("wrote", args.output)
