"""A training run of the official DINOv2 modules with one of this project's configs: the second
curve of the learning benchmark (Benchmarks/learning.sh), and the reference for "does the official
code learn the same with this recipe on these images".

Official, unchanged: DinoVisionTransformer, DINOHead, DINOLoss, iBOTPatchLoss, KoLeoLoss,
DataAugmentationDINO, MaskingGenerator + collate_data_and_cast, get_params_groups_with_decay +
fuse_params_groups, CosineScheduler schedules as train.build_schedulers makes them, AdamW, the
config (dinov2/configs/ssl_default_config.yaml with the given file and key=value overrides merged
on top, as the official train.py does; the sqrt_wrt_1024 lr rule over the global batch). The loop
follows SSLMetaArch.forward_backward, train.do_train and update_teacher. What the official code does
across R ranks is done here in one process, exactly: the global batch is R per-rank batches, each
collated (masks) as one rank's DataLoader collates it; the teacher's targets come from all of them
together (Sinkhorn-Knopp and the centre over the global batch, as the official all-reduces make
them); the student's losses and backward run per rank batch with the loss divided by R (FSDP
averages gradients over ranks), so KoLeo sees a rank's images, as in the official code. Global and
local crops pass through the backbone in two calls (the list call needs xFormers; per crop the
same). Not official: no FSDP and no mixed precision (float32 throughout, as this project trains).

Writes a metrics.jsonl with this project's field names (iteration, loss terms, lr, teacher_entropy,
teacher_mean_entropy, teacher_prototypes_in_use, teacher_cls_spread, teacher_head_spread,
elapsed_seconds, knn_top1 at iteration 0 and every evaluation.eval_period_iterations, with the same
k-NN: the teacher's normalised CLS of the central 224/256 of each image resized to the global crop
size, cosine similarity, k 20, weights exp(s / 0.07)).

    python3 Benchmarks/reference/official_recipe.py --dinov2 PATH_TO_DINOV2 --config Configs/small-data.yaml \\
        --data ~/.cache/dinov2-fsdp/embedded-v4-128px --ranks 8 --output runs/official/metrics.jsonl [key=value ...]
Needs torch, torchvision, omegaconf and a checkout of github.com/facebookresearch/dinov2.
"""
import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from functools import partial

_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--dinov2", default=os.environ.get("DINOV2_ROOT", "."))
sys.path.insert(0, _pre.parse_known_args()[0].dinov2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from dinov2.data.augmentations import DataAugmentationDINO  # noqa: E402
from dinov2.data.collate import collate_data_and_cast  # noqa: E402
from dinov2.data.masking import MaskingGenerator  # noqa: E402
from dinov2.layers import DINOHead, MemEffAttention, NestedTensorBlock as Block  # noqa: E402
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay  # noqa: E402
from dinov2.utils.utils import CosineScheduler  # noqa: E402

ARCHS = {"vit_small": (384, 12, 6), "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16), "vit_giant2": (1536, 40, 24)}


def load_config(dinov2, config_file, overrides):
    cfg = OmegaConf.load(os.path.join(dinov2, "dinov2/configs/ssl_default_config.yaml"))
    if config_file:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(config_file))
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def build(cfg):
    width, depth, heads = ARCHS[cfg.student.arch]
    width = cfg.student.get("embed_dim", 0) or width
    depth = cfg.student.get("depth", 0) or depth
    heads = cfg.student.get("num_heads", 0) or heads
    backbone = partial(DinoVisionTransformer, img_size=cfg.crops.global_crops_size, patch_size=cfg.student.patch_size,
                       embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=4,
                       block_fn=partial(Block, attn_class=MemEffAttention), init_values=cfg.student.layerscale,
                       ffn_layer=cfg.student.ffn_layer, block_chunks=0, qkv_bias=cfg.student.qkv_bias,
                       proj_bias=cfg.student.proj_bias, ffn_bias=cfg.student.ffn_bias,
                       drop_path_uniform=cfg.student.drop_path_uniform,
                       num_register_tokens=cfg.student.num_register_tokens,
                       interpolate_offset=cfg.student.interpolate_offset,
                       interpolate_antialias=cfg.student.interpolate_antialias)
    dino = partial(DINOHead, in_dim=width, out_dim=cfg.dino.head_n_prototypes, hidden_dim=cfg.dino.head_hidden_dim,
                   bottleneck_dim=cfg.dino.head_bottleneck_dim, nlayers=cfg.dino.head_nlayers)
    student = {"backbone": backbone(drop_path_rate=cfg.student.drop_path_rate), "dino_head": dino()}
    teacher = {"backbone": backbone(drop_path_rate=0.0), "dino_head": dino()}
    if cfg.ibot.separate_head:
        ibot = partial(DINOHead, in_dim=width, out_dim=cfg.ibot.head_n_prototypes, hidden_dim=cfg.ibot.head_hidden_dim,
                       bottleneck_dim=cfg.ibot.head_bottleneck_dim, nlayers=cfg.ibot.head_nlayers)
        student["ibot_head"], teacher["ibot_head"] = ibot(), ibot()
    student, teacher = nn.ModuleDict(student), nn.ModuleDict(teacher)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


def schedules(cfg, lr):
    """train.build_schedulers."""
    e = cfg.train.OFFICIAL_EPOCH_LENGTH
    total = cfg.optim.epochs * e
    lr_s = CosineScheduler(lr, cfg.optim.min_lr, total, warmup_iters=cfg.optim.warmup_epochs * e, start_warmup_value=0)
    wd_s = CosineScheduler(cfg.optim.weight_decay, cfg.optim.weight_decay_end, total)
    mom_s = CosineScheduler(cfg.teacher.momentum_teacher, cfg.teacher.final_momentum_teacher, total)
    warm = cfg.teacher.warmup_teacher_temp_epochs * e
    temp_s = CosineScheduler(cfg.teacher.teacher_temp, cfg.teacher.teacher_temp, warm, warmup_iters=warm,
                             start_warmup_value=cfg.teacher.warmup_teacher_temp)
    last_s = CosineScheduler(lr, cfg.optim.min_lr, total, warmup_iters=cfg.optim.warmup_epochs * e, start_warmup_value=0)
    last_s.schedule[: cfg.optim.freeze_last_layer_epochs * e] = 0
    return total, lr_s, wd_s, mom_s, temp_s, last_s


def teacher_targets(cfg, dino_loss, ibot_loss, cls_logits, patch_logits, temp):
    """The teacher's DINO and iBOT targets from its head outputs: the softmax centre (updated) or
    Sinkhorn-Knopp, as SSLMetaArch.forward_backward makes them."""
    if cfg.train.centering == "centering":
        cls_targets = dino_loss.softmax_center_teacher(cls_logits, teacher_temp=temp)
        dino_loss.update_center(cls_logits)
        patch_targets = ibot_loss.softmax_center_teacher(patch_logits.unsqueeze(0), teacher_temp=temp).squeeze(0)
        ibot_loss.update_center(patch_logits.unsqueeze(0))
    else:
        cls_targets = dino_loss.sinkhorn_knopp_teacher(cls_logits, teacher_temp=temp)
        patch_targets = ibot_loss.sinkhorn_knopp_teacher(
            patch_logits, teacher_temp=temp, n_masked_patches_tensor=torch.tensor([patch_logits.shape[0]]))
    return cls_targets, patch_targets


def student_heads(cfg, student, data):
    """SSLMetaArch.forward_backward's student part: the backbone on the masked global crops and the
    local crops, the DINO head on local and global CLS (and on the masked patches with a shared
    head), the iBOT head on the masked patches; returns those three head outputs and the global CLS."""
    s_global = student.backbone(data["collated_global_crops"], masks=data["collated_masks"], is_training=True)
    s_local = student.backbone(data["collated_local_crops"], is_training=True)
    s_patches = s_global["x_norm_patchtokens"].flatten(0, 1).index_select(0, data["mask_indices_list"])
    inputs = [s_local["x_norm_clstoken"], s_global["x_norm_clstoken"]]
    if not cfg.ibot.separate_head:
        inputs.append(s_patches)
    outputs = student.dino_head(torch.cat(inputs)).split([x.shape[0] for x in inputs])
    masked_after = student.ibot_head(s_patches) if cfg.ibot.separate_head else outputs[2]
    return outputs[0], outputs[1], masked_after, s_global["x_norm_clstoken"]


def main():
    parser = argparse.ArgumentParser(parents=[_pre])
    parser.add_argument("--config", help="one of this project's configs (official keys)")
    parser.add_argument("--data", required=True, help="ImageFolder root with train/ and val/")
    parser.add_argument("--output", required=True, help="metrics.jsonl to write")
    parser.add_argument("--ranks", type=int, default=1, help="ranks whose per-rank batches the global batch is")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-iterations", type=int, help="stop after this many (the schedules stay the run's)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    cfg = load_config(args.dinov2, args.config, args.overrides)
    torch.set_num_threads(args.threads)
    seed = cfg.train.seed
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    # iBOTPatchLoss.sinkhorn_knopp_teacher all-reduces unconditionally: a one-process group (a file, no network).
    with tempfile.TemporaryDirectory() as folder:
        torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)

    per_rank, ranks = cfg.train.batch_size_per_gpu, args.ranks
    global_batch = per_rank * ranks
    lr = cfg.optim.base_lr * math.sqrt(global_batch / 1024.0)  # sqrt_wrt_1024
    student, teacher = build(cfg)
    K = cfg.dino.head_n_prototypes
    Ki = cfg.ibot.head_n_prototypes if cfg.ibot.separate_head else K
    dino_loss, ibot_loss, koleo_loss = DINOLoss(K), iBOTPatchLoss(Ki), KoLeoLoss()

    G, L, n_local = cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.local_crops_number
    patch = cfg.student.patch_size
    augment = DataAugmentationDINO(cfg.crops.global_crops_scale, cfg.crops.local_crops_scale, n_local,
                                   global_crops_size=G, local_crops_size=L)
    train_set = datasets.ImageFolder(os.path.join(args.data, "train"), transform=lambda img: augment(img))
    n_tokens = (G // patch) ** 2
    mask_generator = MaskingGenerator(input_size=(G // patch, G // patch), max_num_patches=0.5 * n_tokens)
    collate = partial(collate_data_and_cast, mask_ratio_tuple=cfg.ibot.mask_ratio_min_max,
                      mask_probability=cfg.ibot.mask_sample_probability, n_tokens=n_tokens,
                      mask_generator=mask_generator, dtype=torch.float32)
    sampler = torch.utils.data.RandomSampler(train_set, replacement=True, num_samples=10 ** 8)
    loader = iter(torch.utils.data.DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=1,
                                              collate_fn=collate, drop_last=True, persistent_workers=True))

    groups = []
    for module in student.values():
        groups += fuse_params_groups(get_params_groups_with_decay(module, lr_decay_rate=cfg.optim.layerwise_decay,
                                                                  patch_embed_lr_mult=cfg.optim.patch_embed_lr_mult))
    optimizer = torch.optim.AdamW(groups, betas=(cfg.optim.adamw_beta1, cfg.optim.adamw_beta2))
    total, lr_s, wd_s, mom_s, temp_s, last_s = schedules(cfg, lr)

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def evaluation_view(img):  # KNN.evaluationView: the central 224/256 of the shorter side, resized
        side = round(min(img.size) * 224 / 256)
        return transforms.functional.resize(transforms.functional.center_crop(img, side), [G, G],
                                            interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)

    evaluation = transforms.Compose([evaluation_view, transforms.ToTensor(), transforms.Normalize(mean, std)])
    knn_sets = {split: datasets.ImageFolder(os.path.join(args.data, split), transform=evaluation) for split in ("train", "val")}

    def features(split):
        xs, ys = [], []
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(knn_sets[split], batch_size=64):
                xs.append(F.normalize(teacher.backbone(x), dim=1))
                ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    def knn(k=20, temperature=0.07):
        train_f, train_y = features("train")
        val_f, val_y = features("val")
        similarity, index = (val_f @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(val_f), int(train_y.max()) + 1).scatter_add_(1, train_y[index], (similarity / temperature).exp())
        top5 = votes.topk(min(5, votes.shape[1]), dim=1).indices
        return ((votes.argmax(1) == val_y).float().mean().item() * 100,
                (top5 == val_y.unsqueeze(1)).any(1).float().mean().item() * 100)

    out = open(args.output, "w")

    def record(fields):
        out.write(json.dumps(fields, sort_keys=True) + "\n")
        out.flush()

    start = time.monotonic()
    period = cfg.evaluation.eval_period_iterations
    log_every = cfg.train.get("log_every", 10)
    top1, top5 = knn()
    record({"iteration": 0, "knn_top1": top1, "knn_top5": top5, "elapsed_seconds": time.monotonic() - start})
    print(f"[0/{total}] k-NN top-1 {top1:.1f}%", flush=True)
    window_start, window_images = time.monotonic(), 0
    stop = min(total, args.max_iterations or total)
    for it in range(stop):
        for g in optimizer.param_groups:  # train.apply_optim_scheduler
            g["weight_decay"] = wd_s[it] * g["wd_multiplier"]
            g["lr"] = (last_s[it] if g["is_last_layer"] else lr_s[it]) * g["lr_multiplier"]
        temp = temp_s[it]
        optimizer.zero_grad(set_to_none=True)
        batches = [next(loader) for _ in range(ranks)]
        # Teacher (SSLMetaArch.forward_backward's get_teacher_output) over every rank batch, targets
        # over the global batch.
        with torch.no_grad():
            cls_logits, patch_logits, counts, cls_rows, head_rows = [], [], [], [], []
            for data in batches:
                out_t = teacher.backbone(data["collated_global_crops"], is_training=True)
                cls = out_t["x_norm_clstoken"].chunk(2)
                cls = torch.cat((cls[1], cls[0]))
                patches = out_t["x_norm_patchtokens"].flatten(0, 1).index_select(0, data["mask_indices_list"])
                if cfg.ibot.separate_head:
                    cls_logits.append(teacher.dino_head(cls))
                    patch_logits.append(teacher.ibot_head(patches))
                else:
                    both = teacher.dino_head(torch.cat([cls, patches]))
                    cls_logits.append(both[: cls.shape[0]])
                    patch_logits.append(both[cls.shape[0]:])
                counts.append(patches.shape[0])
                cls_rows.append(out_t["x_norm_clstoken"])
                head_rows.append(F.normalize(teacher.dino_head.mlp(out_t["x_norm_clstoken"]), dim=-1))
            cls_targets, patch_targets = teacher_targets(cfg, dino_loss, ibot_loss, torch.cat(cls_logits),
                                                         torch.cat(patch_logits), temp)
        cls_targets_per_rank = cls_targets.split(2 * per_rank)
        patch_targets_per_rank = patch_targets.split(counts)
        terms = [0.0, 0.0, 0.0, 0.0]
        for data, cls_t, patch_t in zip(batches, cls_targets_per_rank, patch_targets_per_rank):
            targets = cls_t.view(2, per_rank, -1)
            masks, index, weights = data["collated_masks"], data["mask_indices_list"], data["masks_weight"]
            n_masked = index.shape[0]
            local_after, global_after, masked_after, global_cls = student_heads(cfg, student, data)
            n_terms = 2 + max(2 * n_local, 1)
            dino_local = dino_loss(list(local_after.chunk(n_local)), targets) / n_terms if n_local > 0 else torch.zeros(())
            dino_global = dino_loss([global_after], [targets.flatten(0, 1)]) * 2 / n_terms
            koleo = cfg.dino.koleo_loss_weight * sum(koleo_loss(p) for p in global_cls.chunk(2))
            ibot = ibot_loss.forward_masked(masked_after, patch_t, student_masks_flat=masks, n_masked_patches=n_masked,
                                            masks_weight=weights)
            loss = (cfg.dino.loss_weight * (dino_local + dino_global) + koleo + cfg.ibot.loss_weight * ibot) / ranks
            loss.backward()
            for i, term in enumerate((dino_local, dino_global, ibot, koleo)):
                terms[i] += term.item() / ranks
        if cfg.optim.clip_grad:
            for module in student.values():
                nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        with torch.no_grad():  # SSLMetaArch.update_teacher
            s, t = list(student.parameters()), list(teacher.parameters())
            torch._foreach_mul_(t, mom_s[it])
            torch._foreach_add_(t, s, alpha=1 - mom_s[it])
        window_images += global_batch
        done = it + 1
        if done % log_every == 0 or done == stop:
            q = cls_targets.double()
            entropy = -(q * q.clamp_min(1e-30).log()).sum(1).mean().item()
            mean_q = q.mean(0)
            entropy_of_mean = -(mean_q * mean_q.clamp_min(1e-30).log()).sum().item()
            in_use = q.argmax(1).unique().numel()
            cls_spread = torch.cat(cls_rows).double().std(0, unbiased=False).mean().item()
            head_spread = torch.cat(head_rows).double().std(0, unbiased=False).mean().item()
            seconds = time.monotonic() - window_start
            record({"iteration": done, "loss": sum(terms), "dino_local_crops_loss": terms[0],
                    "dino_global_crops_loss": terms[1], "ibot_loss": terms[2], "koleo_loss": terms[3],
                    "lr": lr_s[it], "wd": wd_s[it], "mom": mom_s[it], "teacher_temp": temp,
                    "teacher_entropy": entropy, "teacher_mean_entropy": entropy_of_mean,
                    "teacher_prototypes_in_use": in_use, "teacher_cls_spread": cls_spread,
                    "teacher_head_spread": head_spread, "images_per_sec": window_images / seconds,
                    "elapsed_seconds": time.monotonic() - start})
            print(f"[{done}/{total}] loss {sum(terms):.4f} teacher entropy {entropy:.2f} / mean {entropy_of_mean:.2f} "
                  f"({in_use} prototypes, spread CLS {cls_spread:.3f} head {head_spread:.4f}) "
                  f"{window_images / seconds:.2f} img/s", flush=True)
            window_start, window_images = time.monotonic(), 0
        if period > 0 and done % period == 0 or done == stop:
            top1, top5 = knn()
            record({"iteration": done, "knn_top1": top1, "knn_top5": top5, "elapsed_seconds": time.monotonic() - start})
            print(f"[{done}/{total}] k-NN top-1 {top1:.1f}%", flush=True)
            window_start = time.monotonic()
    out.close()


if __name__ == "__main__":
    main()
