"""Writes official_parity.h5: three DINOv2 training steps computed by the official DINOv2 modules
themselves (a checkout of github.com/facebookresearch/dinov2), the reference for
Tests/DinoTrainingTests/OfficialParityTests.swift.

What is official here, unchanged: DinoVisionTransformer (MemEffAttention blocks, LayerScale,
registers, MLP or SwiGLUFFNFused), DINOHead (weight-normalised last layer), DINOLoss, iBOTPatchLoss,
KoLeoLoss, DataAugmentationDINO (the crops), MaskingGenerator + collate_data_and_cast (the masks),
get_params_groups_with_decay + fuse_params_groups (layer-wise decay, patch-embed multiplier,
weight-decay exemptions), CosineScheduler with train.py's build_schedulers (lr warm-up, last layer
frozen, teacher temperature warm-up, momentum), torch.optim.AdamW. The step itself follows
SSLMetaArch.forward_backward, train.do_train and SSLMetaArch.update_teacher line by line; the only
difference is that the student's global and local crops pass through the backbone in two calls
instead of one list call (the list call needs xFormers' nested tensors; per crop the result is the
same), and clip_grad_norm_ is torch's on each student sub-module (FSDP's is the same norm per module).

Four variants, each a group of the file: softmax centering and Sinkhorn-Knopp, with and without
registers, MLP and SwiGLU, shared and separate iBOT head. Each group holds the config overrides
(dataset "overrides", the keys of this project's config, applied by the test), the initial student
in the official names, the collated crops and masks, the official schedule values per step (lr,
last-layer lr, wd, momentum, teacher temperature), each step's loss terms as they enter the loss
(DINO local, DINO global, iBOT, KoLeo: loss_dict's iBOT and KoLeo are shown halved, these are not),
the clipped student gradients after step 1, and the student and teacher after step 3. The official
modules compute in float64 here, from float32 initial values and crops (exact in both precisions):
the reference carries no rounding of its own, and the test measures this project's float32 error.

Regenerate (CPU PyTorch, torchvision and h5py from PyPI; a checkout of facebookresearch/dinov2):
    pip install torch torchvision h5py omegaconf
    python3 Tests/DinoTrainingTests/Fixtures/generate_official_parity.py --dinov2 /path/to/dinov2
"""
import argparse
import math
import os
import random
import sys
import tempfile
from functools import partial

_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--dinov2", default=os.environ.get("DINOV2_ROOT", "."))
sys.path.insert(0, _pre.parse_known_args()[0].dinov2)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from dinov2.data.augmentations import DataAugmentationDINO  # noqa: E402
from dinov2.data.collate import collate_data_and_cast  # noqa: E402
from dinov2.data.masking import MaskingGenerator  # noqa: E402
from dinov2.layers import DINOHead, MemEffAttention, NestedTensorBlock as Block  # noqa: E402
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay  # noqa: E402
from dinov2.utils.utils import CosineScheduler  # noqa: E402

# The shared setting: a tiny ViT (width 32, depth 2, 2 heads, patch 4), 16-px global and 8-px local
# crops (4 x 4 and 2 x 2 patches), 4 images of 2 global + 2 local crops, heads of 24 prototypes.
IMAGES, GLOBAL, LOCAL, N_LOCAL, PATCH = 4, 16, 8, 2, 4
WIDTH, DEPTH, HEADS = 32, 2, 2
PROTOTYPES, BOTTLENECK, HIDDEN = 24, 8, 32
STEPS = 3
# Official schedule keys, epoch = 1 iteration: lr cosine from base over 3 iterations (no warm-up),
# last layer frozen for step 1, teacher temperature 0.04 -> 0.07 over 2, momentum 0.9 -> 1.
BASE_LR, MIN_LR, WD, WD_END = 0.008, 1e-6, 0.04, 0.4
MOMENTUM, FINAL_MOMENTUM, WARMUP_TEMP, TEMP, TEMP_WARMUP = 0.9, 1.0, 0.04, 0.07, 2
LAYERSCALE, LAYER_DECAY, PATCH_EMBED_MULT, CLIP, KOLEO = 0.5, 0.9, 0.2, 3.0, 0.1

VARIANTS = {
    "centering_mlp": dict(centering="centering", registers=0, ffn="mlp", separate=False),
    "sinkhorn_mlp": dict(centering="sinkhorn_knopp", registers=0, ffn="mlp", separate=False),
    "centering_swiglu_registers_separate": dict(centering="centering", registers=2, ffn="swiglufused", separate=True),
    "sinkhorn_swiglu_registers": dict(centering="sinkhorn_knopp", registers=2, ffn="swiglufused", separate=False),
}


def overrides(v):
    """The same run in this project's config keys (read by the Swift test)."""
    return [
        "student.arch=vit_small", f"student.embed_dim={WIDTH}", f"student.depth={DEPTH}", f"student.num_heads={HEADS}",
        f"student.patch_size={PATCH}", f"student.num_register_tokens={v['registers']}", f"student.ffn_layer={v['ffn']}",
        "student.drop_path_rate=0", f"student.layerscale={LAYERSCALE}",
        f"crops.global_crops_size={GLOBAL}", f"crops.local_crops_size={LOCAL}", f"crops.local_crops_number={N_LOCAL}",
        f"dino.head_n_prototypes={PROTOTYPES}", f"dino.head_bottleneck_dim={BOTTLENECK}", f"dino.head_hidden_dim={HIDDEN}",
        f"ibot.head_n_prototypes={PROTOTYPES}", f"ibot.head_bottleneck_dim={BOTTLENECK}", f"ibot.head_hidden_dim={HIDDEN}",
        f"ibot.separate_head={'true' if v['separate'] else 'false'}", f"dino.koleo_loss_weight={KOLEO}",
        f"train.batch_size_per_gpu={IMAGES}", f"train.centering={v['centering']}", "train.OFFICIAL_EPOCH_LENGTH=1",
        f"optim.epochs={STEPS}", "optim.warmup_epochs=0", "optim.freeze_last_layer_epochs=1",
        f"optim.base_lr={BASE_LR}", f"optim.min_lr={MIN_LR}", f"optim.weight_decay={WD}",
        f"optim.weight_decay_end={WD_END}", f"optim.clip_grad={CLIP}", f"optim.layerwise_decay={LAYER_DECAY}",
        f"optim.patch_embed_lr_mult={PATCH_EMBED_MULT}", f"teacher.momentum_teacher={MOMENTUM}",
        f"teacher.final_momentum_teacher={FINAL_MOMENTUM}", f"teacher.warmup_teacher_temp={WARMUP_TEMP}",
        f"teacher.teacher_temp={TEMP}", f"teacher.warmup_teacher_temp_epochs={TEMP_WARMUP}",
    ]


def schedules():
    """train.build_schedulers with this file's values (epoch length 1; lr by the sqrt_wrt_1024 rule)."""
    lr = BASE_LR * math.sqrt(IMAGES / 1024.0)
    lr_s = CosineScheduler(base_value=lr, final_value=MIN_LR, total_iters=STEPS, warmup_iters=0, start_warmup_value=0)
    wd_s = CosineScheduler(base_value=WD, final_value=WD_END, total_iters=STEPS)
    mom_s = CosineScheduler(base_value=MOMENTUM, final_value=FINAL_MOMENTUM, total_iters=STEPS)
    temp_s = CosineScheduler(base_value=TEMP, final_value=TEMP, total_iters=TEMP_WARMUP, warmup_iters=TEMP_WARMUP,
                             start_warmup_value=WARMUP_TEMP)
    last_s = CosineScheduler(base_value=lr, final_value=MIN_LR, total_iters=STEPS, warmup_iters=0, start_warmup_value=0)
    last_s.schedule[:1] = 0
    return [(lr_s[i], last_s[i], wd_s[i], mom_s[i], temp_s[i]) for i in range(STEPS)]


def picture(seed):
    """A 40 x 40 image with structure (smooth colour field, a square, noise) for the augmentations."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:40, 0:40] / 40.0
    image = np.stack([np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * 0.5 + 0.5,
                      np.cos(5 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * 0.5 + 0.5,
                      x * y], axis=-1)
    a, b = rng.integers(4, 24, 2)
    image[a:a + 12, b:b + 12] = rng.uniform(0, 1, 3)
    # Pixel noise, so that patch tokens differ: with near-equal tokens the key projection's gradient
    # (whose token sum is exactly zero) is mostly float32 cancellation, which Adam would amplify.
    image = np.clip(image * 0.6 + rng.uniform(0, 0.4, image.shape), 0, 1)
    return Image.fromarray((image * 255).astype(np.uint8))


def build(v):
    backbone = partial(DinoVisionTransformer, img_size=GLOBAL, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH,
                       num_heads=HEADS, mlp_ratio=4, block_fn=partial(Block, attn_class=MemEffAttention),
                       init_values=LAYERSCALE, ffn_layer=v["ffn"], block_chunks=0, drop_path_rate=0.0,
                       drop_path_uniform=True, num_register_tokens=v["registers"], interpolate_offset=0.1,
                       interpolate_antialias=False)
    head = partial(DINOHead, in_dim=WIDTH, out_dim=PROTOTYPES, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK, nlayers=3)
    student = {"backbone": backbone(), "dino_head": head()}
    teacher = {"backbone": backbone(), "dino_head": head()}
    if v["separate"]:
        student["ibot_head"], teacher["ibot_head"] = head(), head()
    student, teacher = nn.ModuleDict(student), nn.ModuleDict(teacher)
    # The official init sets biases and the mask token to 0, norms and the last layer's weight_g to 1,
    # LayerScale to one value: vary them, so that every parameter's role shows in the step (and a
    # zero-initialised vector is not compared by the size of three Adam steps alone).
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.endswith("weight_g"):
                p.uniform_(0.8, 1.6)
            elif name.endswith("mask_token") or name.endswith("cls_token") or name.endswith("register_tokens"):
                p.normal_(0, 0.5)
            elif name.endswith(".bias"):
                p.normal_(0, 0.1)
            elif "norm" in name or name.endswith(".gamma"):
                p.add_(torch.randn_like(p) * 0.1)
    # The reference computes in float64 from float32 values (exactly representable on both sides), so
    # that what the test measures is this project's float32 error alone.
    student.double()
    teacher.double()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


def batch():
    """The official augmentations and collate: crops (crop-major, as collate_data_and_cast stacks them) and masks."""
    augment = DataAugmentationDINO([0.32, 1.0], [0.05, 0.32], N_LOCAL, global_crops_size=GLOBAL,
                                   local_crops_size=LOCAL)
    samples = [(augment(picture(i)), None) for i in range(IMAGES)]
    grid = GLOBAL // PATCH
    generator = MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid)
    data = collate_data_and_cast(samples, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.float32,
                                 n_tokens=grid * grid, mask_generator=generator)
    for key in ("collated_global_crops", "collated_local_crops", "masks_weight"):
        data[key] = data[key].double()
    return data


def forward_backward(student, teacher, data, temp, separate, centering, dino_loss, ibot_loss, koleo_loss):
    """SSLMetaArch.forward_backward (n_global_crops 2, DINO, iBOT and KoLeo on); returns the four loss terms."""
    n_local = N_LOCAL
    global_crops, local_crops = data["collated_global_crops"], data["collated_local_crops"]
    masks, mask_indices_list = data["collated_masks"], data["mask_indices_list"]
    n_masked_patches_tensor, n_masked_patches = data["n_masked_patches"], data["mask_indices_list"].shape[0]
    upperbound, masks_weight = data["upperbound"], data["masks_weight"]
    n_local_terms, n_global_terms = max(n_local * 2, 1), 2
    ibot_loss_scale = 1.0 / 2

    with torch.no_grad():
        out = teacher.backbone(global_crops, is_training=True)
        cls = out["x_norm_clstoken"].chunk(2)
        cls = torch.cat((cls[1], cls[0]))
        patches = out["x_norm_patchtokens"]
        dim, n_cls = patches.shape[-1], cls.shape[0]
        if not separate:
            buffer = patches.new_zeros(upperbound + n_cls, dim)
            buffer[:n_cls].copy_(cls)
            torch.index_select(patches.flatten(0, 1), dim=0, index=mask_indices_list,
                               out=buffer[n_cls:n_cls + n_masked_patches])
            tokens = teacher.dino_head(buffer)
            teacher_cls, teacher_masked = tokens[:n_cls], tokens[n_cls:n_cls + n_masked_patches]
        else:
            buffer = patches.new_zeros(upperbound, dim)
            torch.index_select(patches.flatten(0, 1), dim=0, index=mask_indices_list, out=buffer[:n_masked_patches])
            teacher_cls = teacher.dino_head(cls)
            teacher_masked = teacher.ibot_head(buffer)[:n_masked_patches]
        if centering == "centering":
            dino_targets = dino_loss.softmax_center_teacher(teacher_cls, teacher_temp=temp).view(2, -1, PROTOTYPES)
            dino_loss.update_center(teacher_cls)
            teacher_masked = teacher_masked.unsqueeze(0)
            ibot_targets = ibot_loss.softmax_center_teacher(teacher_masked[:, :n_masked_patches], teacher_temp=temp)
            ibot_targets = ibot_targets.squeeze(0)
            ibot_loss.update_center(teacher_masked[:n_masked_patches])
        else:
            dino_targets = dino_loss.sinkhorn_knopp_teacher(teacher_cls, teacher_temp=temp).view(2, -1, PROTOTYPES)
            ibot_targets = ibot_loss.sinkhorn_knopp_teacher(teacher_masked, teacher_temp=temp,
                                                            n_masked_patches_tensor=n_masked_patches_tensor)

    student_global = student.backbone(global_crops, masks=masks, is_training=True)
    student_local = student.backbone(local_crops, masks=None, is_training=True)
    local_cls, global_cls = student_local["x_norm_clstoken"], student_global["x_norm_clstoken"]
    student_patches = student_global["x_norm_patchtokens"]
    buffer = student_patches.new_zeros(upperbound, student_patches.shape[-1])
    buffer[:n_masked_patches].copy_(torch.index_select(student_patches.flatten(0, 1), dim=0, index=mask_indices_list))
    # One head pass over [local CLS; global CLS; masked patches], as the official block-diagonal call.
    inputs = [local_cls, global_cls] + ([] if separate else [buffer])
    outputs = student.dino_head(torch.cat(inputs)).split([x.shape[0] for x in inputs])
    local_after, global_after = outputs[0], outputs[1]
    masked_after = (student.ibot_head(buffer) if separate else outputs[2])[:n_masked_patches]

    dino_local = dino_loss(student_output_list=local_after.chunk(n_local),
                           teacher_out_softmaxed_centered_list=dino_targets) / (n_global_terms + n_local_terms)
    dino_global = dino_loss(student_output_list=[global_after],
                            teacher_out_softmaxed_centered_list=[dino_targets.flatten(0, 1)]) * 2 / (
        n_global_terms + n_local_terms)
    koleo = KOLEO * sum(koleo_loss(p) for p in global_cls.chunk(2))
    ibot = ibot_loss.forward_masked(masked_after, ibot_targets, student_masks_flat=masks,
                                    n_masked_patches=n_masked_patches, masks_weight=masks_weight) * 2 * ibot_loss_scale
    (dino_local + dino_global + koleo + ibot).backward()
    return [dino_local.item(), dino_global.item(), ibot.item(), koleo.item()]


def run(name, v, out):
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    student, teacher = build(v)
    data = batch()
    group = out.create_group(name)
    keys = [k.encode() for k in overrides(v)]
    group["overrides"] = np.array(keys, dtype=f"S{max(len(k) for k in keys)}")
    group["global_crops"] = data["collated_global_crops"].numpy()
    group["local_crops"] = data["collated_local_crops"].numpy()
    group["masks"] = data["collated_masks"].to(torch.float32).numpy()
    for part, module in student.items():
        for key, p in module.state_dict().items():
            group[f"initial/{part}/{key}"] = p.numpy()

    params = []
    for module in student.values():
        params += fuse_params_groups(get_params_groups_with_decay(module, lr_decay_rate=LAYER_DECAY,
                                                                  patch_embed_lr_mult=PATCH_EMBED_MULT))
    optimizer = torch.optim.AdamW(params, betas=(0.9, 0.999))
    dino_loss, ibot_loss, koleo_loss = DINOLoss(PROTOTYPES), iBOTPatchLoss(PROTOTYPES), KoLeoLoss()
    values = schedules()
    group["schedule"] = np.array(values, dtype=np.float64)
    losses = []
    for step, (lr, last_lr, wd, momentum, temp) in enumerate(values):
        for g in optimizer.param_groups:  # train.apply_optim_scheduler
            g["weight_decay"] = wd * g["wd_multiplier"]
            g["lr"] = (last_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        optimizer.zero_grad(set_to_none=True)
        losses.append(forward_backward(student, teacher, data, temp, v["separate"], v["centering"],
                                       dino_loss, ibot_loss, koleo_loss))
        for module in student.values():
            nn.utils.clip_grad_norm_(module.parameters(), CLIP)
        if step == 0:
            for part, module in student.items():
                for key, p in module.named_parameters():
                    group[f"gradients/{part}/{key}"] = p.grad.numpy()
        optimizer.step()
        with torch.no_grad():  # SSLMetaArch.update_teacher
            s, t = list(student.parameters()), list(teacher.parameters())
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, s, alpha=1 - momentum)
    group["losses"] = np.array(losses, dtype=np.float64)
    for part in student.keys():
        for key, p in student[part].state_dict().items():
            group[f"final_student/{part}/{key}"] = p.numpy()
        for key, p in teacher[part].state_dict().items():
            group[f"final_teacher/{part}/{key}"] = p.numpy()
    print(name, "losses per step (dino local, dino global, ibot, koleo):", np.array(losses).round(5).tolist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[_pre])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "official_parity.h5"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    # iBOTPatchLoss.sinkhorn_knopp_teacher all-reduces unconditionally: a one-process group (a file, no network).
    with tempfile.TemporaryDirectory() as folder:
        torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
    with h5py.File(args.output, "w") as out:
        for name, variant in VARIANTS.items():
            run(name, variant, out)
    print("wrote", args.output)
