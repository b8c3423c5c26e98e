#!/usr/bin/env bash
# Training-step throughput of dinov2-fsdp against the official DINOv2 modules in PyTorch, same work
# per image (2 x 224 + 8 x 98 crops, shared head, Sinkhorn-Knopp, drop path 0), same cores, in one
# run: for each model and precision, ours (1 rank x all cores; and 2 ranks x 1 thread, FULL_SHARD,
# half the batch each) and PyTorch (Benchmarks/reference/torch_step.py, fp32 or bf16 autocast),
# interleaved, --rounds times; the table shows medians of images/s and the ratios.
#
#   Benchmarks/compare-torch.sh --dinov2 PATH [--rounds 3] [--steps 3] [--output Benchmarks/compare-torch]
# Needs torch and omegaconf (pip) and a checkout of github.com/facebookresearch/dinov2.
set -euo pipefail
cd "$(dirname "$0")/.."

dinov2="${DINOV2_ROOT:-}"
rounds=3
steps=3
output=Benchmarks/compare-torch
while [ $# -gt 0 ]; do
  case "$1" in
    --dinov2) dinov2="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    *) echo "compare-torch.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$dinov2" ] && [ -d "$dinov2/dinov2" ] || {
  echo "compare-torch.sh: pass --dinov2 PATH, a checkout of facebookresearch/dinov2" >&2; exit 2; }
binary=.build/release/dinov2-fsdp
[ -x "$binary" ] || swift build -c release --product dinov2-fsdp
cores=$(nproc)
mkdir -p "$output"

common="student.drop_path_rate=0 train.centering=sinkhorn_knopp crops.local_crops_size=98"
declare -A batch=([vits14]=4 [w192]=8)
declare -A models=(
  [vits14]="$common"
  [w192]="student.embed_dim=192 student.depth=12 student.num_heads=3 dino.head_n_prototypes=4096
    ibot.head_n_prototypes=4096 $common"
)

for round in $(seq 1 "$rounds"); do
  for model in vits14 w192; do
    overrides="train.batch_size_per_gpu=${batch[$model]} ${models[$model]}"
    halved="train.batch_size_per_gpu=$((batch[$model] / 2)) ${models[$model]}"
    for precision in fp32 bf16; do
      tag="$model-$precision-r$round"
      echo "== $tag" >&2
      "$binary" bench step --config Configs/vits14.yaml --threads "$cores" --steps "$steps" --warmup 1 \
        --json "$output/ours-1x$cores-$tag.json" $overrides compute_precision=$precision >/dev/null
      Launch/mpirun.sh -n 2 "$binary" bench step --config Configs/vits14.yaml --threads 1 --steps "$steps" \
        --warmup 1 --json "$output/ours-2x1-$tag.json" $halved compute_precision=$precision >/dev/null
      flag=""; [ "$precision" = bf16 ] && flag=--bf16
      python3 Benchmarks/reference/torch_step.py --dinov2 "$dinov2" --config Configs/vits14.yaml \
        --threads "$cores" --steps "$steps" --warmup 1 $flag --json "$output/torch-$tag.json" $overrides \
        >/dev/null 2>"$output/torch-$tag.log"
    done
  done
done

python3 - "$output" "$cores" <<'EOF'
import glob, json, os, statistics, sys
folder, cores = sys.argv[1], sys.argv[2]
def median(pattern, key):
    values = [json.load(open(f))[key] for f in sorted(glob.glob(os.path.join(folder, pattern)))]
    return statistics.median(values) if values else float("nan"), len(values)
rows = ["| model | precision | ours 1 x %s | ours 2 x 1 | PyTorch | ours best / PyTorch | runs |" % cores,
        "|---|---|---|---|---|---|---|"]
table = {}
for model, name in (("vits14", "ViT-S/14, K 65536, batch 4"), ("w192", "width 192 / depth 12, K 4096, batch 8")):
    for precision in ("fp32", "bf16"):
        one, n = median(f"ours-1x{cores}-{model}-{precision}-r*.json", "images_per_sec")
        two, _ = median(f"ours-2x1-{model}-{precision}-r*.json", "images_per_sec")
        torch, _ = median(f"torch-{model}-{precision}-r*.json", "images_per_sec")
        table[(model, precision)] = (one, two, torch)
        label = "fp32" if precision == "fp32" else "bf16 (ours) / bf16 autocast (PyTorch)"
        rows.append(f"| {name} | {label} | {one:.2f} | {two:.2f} | {torch:.2f} | {max(one, two) / torch:.2f}x | {n} |")
for model in ("vits14", "w192"):
    one32, two32, _ = table[(model, "fp32")]
    one16, two16, _ = table[(model, "bf16")]
    rows.append(f"| {model}: our bf16 / our fp32 | | {one16 / one32:.2f}x | {two16 / two32:.2f}x | | | |")
text = "\n".join(rows)
print(text)
open(os.path.join(folder, "table.md"), "w").write(text + "\n")
EOF
