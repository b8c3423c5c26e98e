#!/usr/bin/env bash
# Two builds of dinov2-fsdp side by side on the same training steps: ViT-S/14 (K 65536, batch 4) and
# the width-192 model (depth 12, K 4096, batch 8), fp32 and bf16, 1 rank x all cores, interleaved
# round by round so both see the same spells of a shared host; prints every run and the medians.
#
#   Benchmarks/ab-step.sh OLD_BINARY NEW_BINARY [--rounds 3] [--steps 3]
#
# Copy the binaries out of .build first (git worktree or cp), so a rebuild cannot swap one mid-run.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,8p' "$0"; exit 2; }
old="$1"; new="$2"; shift 2
rounds=3; steps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "ab-step.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
common="student.drop_path_rate=0 train.centering=sinkhorn_knopp crops.local_crops_size=98"
declare -A models=(
  [vits14]="train.batch_size_per_gpu=4 $common"
  [w192]="train.batch_size_per_gpu=8 student.embed_dim=192 student.depth=12 student.num_heads=3
    dino.head_n_prototypes=4096 ibot.head_n_prototypes=4096 $common"
)
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$rounds"); do
  for binary in "$old" "$new"; do
    for model in vits14 w192; do
      for precision in fp32 bf16; do
        rate=$("$binary" bench step --config Configs/vits14.yaml --threads "$(nproc)" --steps "$steps" --warmup 1 \
          ${models[$model]} compute_precision=$precision 2>&1 | awk '/images\/s/ {print $2; exit}')
        echo "$round $binary $model $precision ${rate:-failed}" | tee -a "$results"
      done
    done
  done
done
python3 - "$results" "$old" "$new" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, binary, model, precision, rate = line.split()
    if rate != "failed":
        runs[(model, precision, binary)].append(float(rate))
old, new = sys.argv[2], sys.argv[3]
print("| model | precision | old images/s | new images/s | new / old |")
print("|---|---|---|---|---|")
for model in ("vits14", "w192"):
    for precision in ("fp32", "bf16"):
        a = statistics.median(runs[(model, precision, old)] or [float("nan")])
        b = statistics.median(runs[(model, precision, new)] or [float("nan")])
        print(f"| {model} | {precision} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
PY
