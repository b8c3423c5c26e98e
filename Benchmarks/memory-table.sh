#!/usr/bin/env bash
# Peak RSS per rank, measured by `bench step` and predicted by the memory model, for ViT-S/B/L/14 at
# 1, 2, 4 and 8 ranks (FULL_SHARD), activation checkpointing off and on, plus the prediction alone
# for ViT-g/14 at 8-64 ranks. Official recipes (vits14 / vitb14 / vitl14) at a small batch per rank
# (S and B 2 images, L 1), KoLeo off (it needs 2 images per rank), 1 warm-up + 1 timed step.
# Rows the memory check refuses (the node would run out) say so with the prediction.
#
#   Benchmarks/memory-table.sh BINARY [OUTPUT_FOLDER]     (BINARY: a copy of .build/release/dinov2-fsdp)
#
# Every run's JSON report and log land in OUTPUT_FOLDER (default Benchmarks/memory); the Markdown
# table goes to standard output. Takes about 45 minutes on 2 cores.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
binary="$(realpath "$1")"; out="${2:-Benchmarks/memory}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
declare -A batch=([vits14]=2 [vitb14]=2 [vitl14]=1)
echo "| model | ranks | checkpointing | predicted MiB/rank | measured peak RSS MiB/rank (largest rank) | error |"\
  "sum over ranks GiB | predicted for a long run MiB/rank |"
echo "|---|---|---|---|---|---|---|---|"
for model in vits14 vitb14 vitl14; do
  for ranks in 1 2 4 8; do
    for mode in none full; do
      name="$model-$ranks-$mode"
      args=(--config "Configs/$model.yaml" "train.batch_size_per_gpu=${batch[$model]}" dino.koleo_loss_weight=0
        "activation_checkpoint.mode=$mode")
      # The prediction for these 2 steps (heads sized for their masks), and for a long run (sized for the
      # most masked tokens the mask plan can give a rank: what `train` checks).
      predicted=$("$binary" config --memory --bench-steps 2 --world-size "$ranks" "${args[@]}" |
        awk '/total per rank/ {print $1}')
      long=$("$binary" config --memory --world-size "$ranks" "${args[@]}" | awk '/total per rank/ {print $1}')
      # A report already in OUTPUT_FOLDER is reused (re-running the script with a newer build then only
      # recomputes the predictions).
      if [ -f "$out/$name.json" ] || Launch/mpirun.sh -n "$ranks" "$binary" bench step "${args[@]}" --steps 1 \
        --warmup 1 --json "$out/$name.json" > "$out/$name.log" 2>&1; then
        python3 - "$out/$name.json" "$model" "$ranks" "$mode" "$predicted" "$long" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
model, ranks, mode, predicted, long = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
peak = max(report["rss_bytes_per_rank"]) / 2**20
total = sum(report["rss_bytes_per_rank"]) / 2**30
error = 100 * (predicted / peak - 1)
print(f"| {model} | {ranks} | {mode} | {predicted:.0f} | {peak:.0f} | {error:+.1f} % | {total:.1f} | {long} |")
PY
      elif grep -q "needs about" "$out/$name.log"; then
        need=$(grep -o 'needs about [0-9.]* GiB' "$out/$name.log" | head -1)
        echo "| $model | $ranks | $mode | $predicted | refused before allocating: $need on the node | | | $long |"
      else
        echo "| $model | $ranks | $mode | $predicted | failed, see $out/$name.log | | | $long |"
      fi
    done
  done
done
echo
echo "ViT-g/14 (vitg14 recipe, 1 image per rank, KoLeo off, checkpointing auto = on), predicted per rank:"
echo
echo "| ranks | predicted GiB/rank | of which shards and moments GiB |"
echo "|---|---|---|"
for ranks in 8 16 32 64; do
  "$binary" config --memory --world-size "$ranks" --ranks-per-node 8 --config Configs/vitg14.yaml \
    train.batch_size_per_gpu=1 dino.koleo_loss_weight=0 | awk -v r="$ranks" '
      /student shards|teacher shards|AdamW moments/ {s += $1}
      /total per rank/ {t = $1}
      END {printf "| %d | %.2f | %.2f |\n", r, t / 1024, s / 1024}'
done
