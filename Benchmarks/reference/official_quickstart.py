# The quickstart's training run done by the official DINOv2 modules, as a reference for what the
# recipe learns in that budget: model (DinoVisionTransformer, width 192, depth 6, LayerScale),
# DINOHead, DINOLoss / iBOTPatchLoss / KoLeoLoss, DataAugmentationDINO, MaskingGenerator and
# collate_data_and_cast, the official parameter groups and cosine schedules, driven by a plain
# one-process loop that follows ssl_meta_arch.forward_backward and train.do_train (no FSDP, no
# xFormers: global and local crops go through the backbone separately, which equals the packed pass).
# Prints the teacher's k-NN top-1 (CLS, cosine, k 20, T 0.07) at initialisation and every
# --eval-every iterations, the teacher-target entropies, and a probe of the teacher head
# (how much the CLS and the bottleneck vary over images).
#
# Needs torch, torchvision and a checkout of github.com/facebookresearch/dinov2:
#   python3 Benchmarks/reference/official_quickstart.py --dinov2 /path/to/dinov2 [--layerscale 1.0 ...]
# Images: an ImageFolder root with train/ and val/ (default: the embedded dataset's cache, written
# by the first `dinov2-fsdp train`).
import argparse, math, os, random, sys, time
from functools import partial
import numpy as np
import torch, torch.nn.functional as F
from torch import nn
from torchvision import datasets, transforms

_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--dinov2", default=os.environ.get("DINOV2_ROOT", "."))
sys.path.insert(0, _pre.parse_known_args()[0].dinov2)
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.layers import MemEffAttention, NestedTensorBlock as Block, DINOHead
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss
from dinov2.data.augmentations import DataAugmentationDINO
from dinov2.data.masking import MaskingGenerator
from dinov2.data.collate import collate_data_and_cast
from dinov2.utils.param_groups import get_params_groups_with_decay, fuse_params_groups
from dinov2.utils.utils import CosineScheduler

p = argparse.ArgumentParser()
p.add_argument("--dinov2", default=os.environ.get("DINOV2_ROOT", "."), help="checkout of facebookresearch/dinov2")
p.add_argument("--data", default=os.path.expanduser("~/.cache/dinov2-fsdp/embedded-v3-128px"))
p.add_argument("--epochs", type=int, default=6)
p.add_argument("--epoch-length", type=int, default=20)
p.add_argument("--warmup-epochs", type=int, default=1)
p.add_argument("--teacher-warmup-epochs", type=int, default=2)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--layerscale", type=float, default=1e-5)
p.add_argument("--momentum", type=float, default=0.992)
p.add_argument("--lr", type=float, default=None)
p.add_argument("--prototypes", type=int, default=4096)
p.add_argument("--centering", default="centering")
p.add_argument("--eval-every", type=int, default=60)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--global-scale", type=float, nargs=2, default=[0.32, 1.0])
p.add_argument("--local-number", type=int, default=4)
args = p.parse_args()
torch.manual_seed(args.seed); random.seed(args.seed); np.random.seed(args.seed)
torch.set_num_threads(2)

D, depth, heads, G, L = 192, 6, 3, 112, 56
def backbone(drop_path):
    return DinoVisionTransformer(img_size=G, patch_size=14, embed_dim=D, depth=depth, num_heads=heads, mlp_ratio=4,
                                 block_fn=partial(Block, attn_class=MemEffAttention), init_values=args.layerscale,
                                 ffn_layer="mlp", block_chunks=0, drop_path_rate=drop_path, drop_path_uniform=True,
                                 num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False)
K = args.prototypes
head = lambda: DINOHead(in_dim=D, out_dim=K, hidden_dim=512, bottleneck_dim=128, nlayers=3)
student = nn.ModuleDict({"backbone": backbone(0.1), "dino_head": head()})
teacher = nn.ModuleDict({"backbone": backbone(0.0), "dino_head": head()})
teacher.load_state_dict(student.state_dict())
for q in teacher.parameters(): q.requires_grad = False

dino_loss, ibot_loss, koleo = DINOLoss(K), iBOTPatchLoss(K), KoLeoLoss()

aug = DataAugmentationDINO([args.global_scale[0], args.global_scale[1]], [0.05, 0.32], args.local_number, global_crops_size=G, local_crops_size=L)
train_set = datasets.ImageFolder(os.path.join(args.data, "train"), transform=aug)
n_tokens = (G // 14) ** 2
mask_gen = MaskingGenerator(input_size=(G // 14, G // 14), max_num_patches=0.5 * n_tokens)
collate = partial(collate_data_and_cast, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.float32,
                  n_tokens=n_tokens, mask_generator=mask_gen)
sampler = torch.utils.data.RandomSampler(train_set, replacement=True, num_samples=10**7)
loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch, sampler=sampler, num_workers=1, collate_fn=collate, drop_last=True)

groups = []
for m in student.values():
    groups += get_params_groups_with_decay(model=m, lr_decay_rate=0.9, patch_embed_lr_mult=0.2)
groups = fuse_params_groups(groups)
for g in groups: g["foreach"] = True
opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))

E = args.epoch_length; total = args.epochs * E
lr = args.lr if args.lr is not None else 0.004 * math.sqrt(args.batch / 1024)
lr_s = CosineScheduler(lr, 1e-6, total, warmup_iters=args.warmup_epochs * E, start_warmup_value=0)
wd_s = CosineScheduler(0.04, 0.4, total)
mom_s = CosineScheduler(args.momentum, 1.0, total)
tt_s = CosineScheduler(0.07, 0.07, args.teacher_warmup_epochs * E, warmup_iters=args.teacher_warmup_epochs * E, start_warmup_value=0.04)
ll_s = CosineScheduler(lr, 1e-6, total, warmup_iters=args.warmup_epochs * E, start_warmup_value=0)
ll_s.schedule[: 1 * E] = 0

mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
evaltf = transforms.Compose([transforms.Resize(G), transforms.CenterCrop(G), transforms.ToTensor(), transforms.Normalize(mean, std)])
def feats(split):
    ds = datasets.ImageFolder(os.path.join(args.data, split), transform=evaltf)
    dl = torch.utils.data.DataLoader(ds, batch_size=128)
    xs, ys = [], []
    with torch.no_grad():
        for x, y in dl:
            xs.append(F.normalize(teacher["backbone"](x), dim=1)); ys.append(y)
    return torch.cat(xs), torch.cat(ys)
def knn(k=20, T=0.07):
    teacher.eval(); ft, yt = feats("train"); fv, yv = feats("val"); teacher.train()
    sim = fv @ ft.T; s, idx = sim.topk(k, dim=1); w = (s / T).exp()
    votes = torch.zeros(len(fv), int(yt.max()) + 1).scatter_add_(1, yt[idx], w)
    return (votes.argmax(1) == yv).float().mean().item() * 100

print(f"k-NN at init: {knn():.1f}%", flush=True)

def probe(tag):
    with torch.no_grad():
        x = next(iter(loader))["collated_global_crops"][:64]
        h = teacher["dino_head"]
        z = teacher["backbone"](x)
        y = h.mlp(z); yn = F.normalize(y, dim=-1)
        logits = h.last_layer(yn)
        W = h.last_layer.weight  # effective (weight-normed) [K, 128]
        sv = torch.linalg.svdvals(F.normalize(W, dim=1)); svy = torch.linalg.svdvals(yn - yn.mean(0))
        print(f"{tag}: cls std over images {z.std(0).mean():.4f}, bottleneck |mean| {yn.mean(0).norm():.4f}, "
              f"logit std over prototypes {logits.std(1).mean():.4f}, over images {logits.std(0).mean():.4f}; "
              f"prototype sv top5 {[round(v,2) for v in (sv[:5]/sv.sum()).tolist()]}, bottleneck-dev sv top5 {[round(v,2) for v in (svy[:5]/svy.sum()).tolist()]}, "
              f"weight_g mean {h.last_layer.weight_g.mean():.3f}", flush=True)

probe("init")
it = 0; t0 = time.time()
for data in loader:
    if it >= total: break
    for g in opt.param_groups:
        g["weight_decay"] = wd_s[it] * g["wd_multiplier"]
        g["lr"] = (ll_s[it] if g["is_last_layer"] else lr_s[it]) * g["lr_multiplier"]
    temp = tt_s[it]
    opt.zero_grad(set_to_none=True)
    gc, lc = data["collated_global_crops"], data["collated_local_crops"]
    masks, idx, mw = data["collated_masks"], data["mask_indices_list"], data["masks_weight"]
    nm = idx.shape[0]; nl = args.local_number
    with torch.no_grad():
        out = teacher["backbone"](gc, is_training=True)
        cls = out["x_norm_clstoken"].chunk(2); cls = torch.cat((cls[1], cls[0]))
        pt = out["x_norm_patchtokens"].flatten(0, 1).index_select(0, idx)
        th = teacher["dino_head"](torch.cat([cls, pt]))
        tcls, tpt = th[: cls.shape[0]], th[cls.shape[0]:]
        if args.centering == "centering":
            tq = dino_loss.softmax_center_teacher(tcls, teacher_temp=temp).view(2, -1, K)
            dino_loss.update_center(tcls)
            tpq = ibot_loss.softmax_center_teacher(tpt.unsqueeze(0), teacher_temp=temp).squeeze(0)
            ibot_loss.update_center(tpt.unsqueeze(0))
        else:
            tq = dino_loss.sinkhorn_knopp_teacher(tcls, teacher_temp=temp).view(2, -1, K)
            tpq = ibot_loss.sinkhorn_knopp_teacher(tpt, teacher_temp=temp, n_masked_patches_tensor=torch.tensor([nm]))
    sg = student["backbone"](gc, masks=masks, is_training=True)
    sl = student["backbone"](lc, is_training=True)
    spt = sg["x_norm_patchtokens"].flatten(0, 1).index_select(0, idx)
    hin = torch.cat([sl["x_norm_clstoken"], sg["x_norm_clstoken"], spt])
    ho = student["dino_head"](hin)
    nlc = sl["x_norm_clstoken"].shape[0]; ngc = sg["x_norm_clstoken"].shape[0]
    slo, sgo, spo = ho[:nlc], ho[nlc:nlc + ngc], ho[nlc + ngc:]
    terms = 2 + max(2 * nl, 1)
    l_local = dino_loss(list(slo.chunk(nl)), tq) / terms if nl > 0 else torch.zeros(())
    l_global = dino_loss([sgo], [tq.flatten(0, 1)]) * 2 / terms
    l_koleo = 0.1 * sum(koleo(c) for c in sg["x_norm_clstoken"].chunk(2))
    l_ibot = ibot_loss.forward_masked(spo, tpq, student_masks_flat=masks, n_masked_patches=nm, masks_weight=mw)
    loss = l_local + l_global + l_koleo + l_ibot
    loss.backward()
    for m in student.values(): torch.nn.utils.clip_grad_norm_(m.parameters(), 3.0)
    opt.step()
    with torch.no_grad():
        m = mom_s[it]
        for ps, pt_ in zip(student.parameters(), teacher.parameters()): pt_.mul_(m).add_(ps.detach(), alpha=1 - m)
    it += 1
    if it % 10 == 0:
        ent = -(tq.flatten(0, 1) * (tq.flatten(0, 1) + 1e-12).log()).sum(1).mean().item()
        mq = tq.flatten(0, 1).mean(0); ment = -(mq * (mq + 1e-12).log()).sum().item()
        print(f"[{it}/{total}] loss {loss.item():.4f} local {l_local.item():.4f} global {l_global.item():.4f} ibot {l_ibot.item():.4f} koleo {l_koleo.item():.4f} "
              f"teacher entropy {ent:.3f} mean {ment:.3f} in use {tq.flatten(0,1).argmax(1).unique().numel()} {it * args.batch / (time.time() - t0):.1f} img/s", flush=True)
    if it % args.eval_every == 0 or it == total:
        print(f"[{it}] k-NN {knn():.1f}%", flush=True); probe(f"it {it}")
probe("end")
