#!/usr/bin/env bash
# Scaling sweep of full training steps (`bench step`): weak scaling (fixed images per rank) and
# strong scaling (fixed global batch) over rank counts and sharding strategies, then a CSV and an
# SVG picture of throughput per rank and scaling efficiency (`bench scaling-report`).
#
#   Benchmarks/scaling-sweep.sh [--config Configs/vits14.yaml] [--ranks "1 2 4 8"] [--per-rank 2]
#       [--global 16] [--steps 2] [--strategies "FULL_SHARD SHARD_GRAD_OP NO_SHARD HYBRID_SHARD"]
#       [--output Benchmarks/sweep-vits14] [key=value ...]
#
# Every point is one `Launch/mpirun.sh -n N dinov2-fsdp bench step ... --json` run writing
# OUTPUT/{weak,strong}-STRATEGY-N.json; HYBRID_SHARD runs with groups of 2 from 4 ranks on.
# Strong scaling skips rank counts that do not divide the global batch into at least 2 images per rank. Points already written
# are kept (rerun after an interruption to fill the rest; delete the folder to start over).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

config="Configs/vits14.yaml"; ranks="1 2 4 8"; per_rank=2; global=16; steps=2
strategies="FULL_SHARD SHARD_GRAD_OP NO_SHARD HYBRID_SHARD"; output=""; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --per-rank) per_rank="$2"; shift 2 ;;
    --global) global="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --strategies) strategies="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$root/$config" ] || [ -f "$config" ] || { echo "error: config $config not found" >&2; exit 2; }
name="$(basename "$config" .yaml)"
output="${output:-$root/Benchmarks/sweep-$name}"
mkdir -p "$output"
cd "$root"
[ -x .build/release/dinov2-fsdp ] || swift build -c release

point() {  # mode strategy ranks batch-per-rank
  local mode="$1" strategy="$2" n="$3" batch="$4" file="$output/$1-$2-$3.json"
  if [ -s "$file" ]; then echo "keeping $file"; return; fi
  local extra=("fsdp.sharding_strategy=$strategy")
  if [ "$strategy" = HYBRID_SHARD ]; then extra+=("fsdp.hybrid_group_size=2"); fi
  echo "== $mode $strategy $n rank(s), $batch image(s) per rank"
  Launch/mpirun.sh -n "$n" dinov2-fsdp bench step --config "$config" --steps "$steps" --warmup 1 \
    --json "$file.tmp" "train.batch_size_per_gpu=$batch" "${extra[@]}" "${overrides[@]}"
  mv "$file.tmp" "$file"
}

for strategy in $strategies; do
  for n in $ranks; do
    # One rank is the same computation whatever the strategy: measured once, as FULL_SHARD.
    if [ "$n" -eq 1 ] && [ "$strategy" != FULL_SHARD ]; then continue; fi
    if [ "$strategy" = HYBRID_SHARD ] && { [ "$n" -lt 4 ] || [ $((n % 2)) -ne 0 ]; }; then continue; fi
    point weak "$strategy" "$n" "$per_rank"
    # Strong scaling needs whole images per rank, and 2 for KoLeo (its nearest neighbour is per rank).
    if [ $((global % n)) -eq 0 ] && [ $((global / n)) -ge 2 ]; then point strong "$strategy" "$n" $((global / n)); fi
  done
done
.build/release/dinov2-fsdp bench scaling-report "$output" --title "$name: weak ($per_rank images/rank) and strong (global batch $global) scaling"
