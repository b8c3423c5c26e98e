"""Times training steps of the official DINOv2 modules in PyTorch on the same work per image as
`dinov2-fsdp bench step` (synthetic crops: 2 global + N local per image, masks as the official
collate makes them, the config's centering, heads and losses), in fp32 or with bf16 autocast, so
that Benchmarks/compare-torch.sh can set the two side by side in one run.

A step: teacher backbone + heads under no_grad, the centering (Sinkhorn-Knopp or softmax centre),
student backbone on global and local crops, heads, DINO + iBOT + KoLeo losses, backward, per-module
gradient clipping, AdamW, the teacher EMA (SSLMetaArch.forward_backward + update_teacher; one rank).
bf16: the forward passes run under torch.autocast("cpu", bfloat16), as a PyTorch user turns bf16
on; parameters, gradients, AdamW and the EMA stay fp32.

    python3 Benchmarks/reference/torch_step.py --dinov2 PATH --config Configs/vits14.yaml --threads 2 \\
        --steps 5 --warmup 1 [--bf16] [--json out.json] [key=value ...]
Prints one line: images/s, the median step and its phases. Needs torch, omegaconf and a checkout of
github.com/facebookresearch/dinov2.
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_recipe import _pre, build, load_config, student_heads, teacher_targets  # noqa: E402  (puts --dinov2 on sys.path)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dinov2.data.collate import collate_data_and_cast  # noqa: E402
from dinov2.data.masking import MaskingGenerator  # noqa: E402
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss  # noqa: E402
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay  # noqa: E402


def main():
    parser = argparse.ArgumentParser(parents=[_pre])
    parser.add_argument("--config", help="one of this project's configs (official keys)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="forward passes under bf16 autocast")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    cfg = load_config(args.dinov2, args.config, args.overrides)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:  # iBOTPatchLoss's Sinkhorn-Knopp all-reduces
        torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)

    b = cfg.train.batch_size_per_gpu
    student, teacher = build(cfg)
    K = cfg.dino.head_n_prototypes
    Ki = cfg.ibot.head_n_prototypes if cfg.ibot.separate_head else K
    dino_loss, ibot_loss, koleo_loss = DINOLoss(K), iBOTPatchLoss(Ki), KoLeoLoss()
    G, L, n_local, patch = (cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.local_crops_number,
                            cfg.student.patch_size)
    n_tokens = (G // patch) ** 2
    mask_generator = MaskingGenerator(input_size=(G // patch, G // patch), max_num_patches=0.5 * n_tokens)

    def batch():
        samples = [({"global_crops": [torch.randn(3, G, G) for _ in range(2)],
                     "local_crops": [torch.randn(3, L, L) for _ in range(n_local)]}, 0) for _ in range(b)]
        return collate_data_and_cast(samples, mask_ratio_tuple=cfg.ibot.mask_ratio_min_max,
                                     mask_probability=cfg.ibot.mask_sample_probability, n_tokens=n_tokens,
                                     mask_generator=mask_generator, dtype=torch.float32)

    groups = []
    for module in student.values():
        groups += fuse_params_groups(get_params_groups_with_decay(module, lr_decay_rate=cfg.optim.layerwise_decay,
                                                                  patch_embed_lr_mult=cfg.optim.patch_embed_lr_mult))
    lr = cfg.optim.base_lr * math.sqrt(b / 1024.0)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(cfg.optim.adamw_beta1, cfg.optim.adamw_beta2))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    temp, momentum = cfg.teacher.teacher_temp, cfg.teacher.momentum_teacher

    def step(data, phases):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        index, masks, weights = data["mask_indices_list"], data["collated_masks"], data["masks_weight"]
        n_masked = index.shape[0]
        with torch.no_grad(), autocast():
            out_t = teacher.backbone(data["collated_global_crops"], is_training=True)
            cls = out_t["x_norm_clstoken"].chunk(2)
            cls = torch.cat((cls[1], cls[0]))
            patches = out_t["x_norm_patchtokens"].flatten(0, 1).index_select(0, index)
            if cfg.ibot.separate_head:
                cls_logits, patch_logits = teacher.dino_head(cls), teacher.ibot_head(patches)
            else:
                both = teacher.dino_head(torch.cat([cls, patches]))
                cls_logits, patch_logits = both[: cls.shape[0]], both[cls.shape[0]:]
        with torch.no_grad():
            cls_t, patch_t = teacher_targets(cfg, dino_loss, ibot_loss, cls_logits.float(), patch_logits.float(), temp)
        t1 = time.perf_counter()
        targets = cls_t.view(2, b, -1)
        with autocast():
            local_after, global_after, masked_after, global_cls = student_heads(cfg, student, data)
        local_after, global_after = local_after.float(), global_after.float()
        n_terms = 2 + max(2 * n_local, 1)
        dino_local = dino_loss(list(local_after.chunk(n_local)), targets) / n_terms if n_local else 0
        dino_global = dino_loss([global_after], [targets.flatten(0, 1)]) * 2 / n_terms
        koleo = cfg.dino.koleo_loss_weight * sum(koleo_loss(p.float()) for p in global_cls.chunk(2))
        ibot = ibot_loss.forward_masked(masked_after.float(), patch_t, student_masks_flat=masks,
                                        n_masked_patches=n_masked, masks_weight=weights)
        loss = cfg.dino.loss_weight * (dino_local + dino_global) + koleo + cfg.ibot.loss_weight * ibot
        loss_value = loss.item()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if cfg.optim.clip_grad:
            for module in student.values():
                nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        t4 = time.perf_counter()
        with torch.no_grad():
            s, t = list(student.parameters()), list(teacher.parameters())
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, s, alpha=1 - momentum)
        t5 = time.perf_counter()
        phases.append({"step": t5 - t0, "teacher_forward": t1 - t0, "student_forward": t2 - t1,
                       "backward": t3 - t2, "optimizer": t4 - t3, "ema": t5 - t4, "loss": loss_value})

    data = [batch() for _ in range(2)]
    phases = []
    for i in range(args.warmup + args.steps):
        step(data[i % 2], phases)
    timed = phases[args.warmup:]
    result = {key: statistics.median(p[key] for p in timed) for key in timed[0] if key != "loss"}
    result.update({"images_per_sec": b / result["step"], "precision": "bf16 autocast" if args.bf16 else "fp32",
                   "threads": args.threads, "batch": b, "steps": args.steps, "torch": torch.__version__})
    print(json.dumps(result, sort_keys=True), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, sort_keys=True, indent=1)


if __name__ == "__main__":
    main()
