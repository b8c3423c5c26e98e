#!/usr/bin/env bash
# The learning benchmark: does the small-data recipe learn, and as the official code does?
#   1. trains Configs/small-data.yaml on the embedded dataset under Launch/mpirun.sh -n RANKS with a
#      k-NN evaluation every evaluation.eval_period_iterations (and before step 1);
#   2. with --dinov2 PATH (a checkout of facebookresearch/dinov2; needs torch, torchvision, omegaconf),
#      trains the same config on the same images with the official modules
#      (Benchmarks/reference/official_recipe.py, the global batch split into RANKS rank batches);
#   3. writes OUTPUT/learning.csv and OUTPUT/learning.svg (k-NN over iterations and wall time,
#      teacher entropy against ln K, prototypes in use, spreads) and prints a summary per run.
# Usage: Benchmarks/learning.sh [--ranks 8] [--config Configs/small-data.yaml] [--output Benchmarks/learning]
#                               [--work runs/learning] [--dinov2 PATH] [--official-iterations N]
#                               [--threads 2] [key=value ...]
# The runs' folders go to --work (checkpoints, metrics.jsonl); the report and both metrics files to --output.
# --official-iterations stops the official run early (same schedules), for comparing at equal iterations.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ranks=8; config=Configs/small-data.yaml; output=Benchmarks/learning; work=runs/learning; dinov2=""
threads=$(nproc); official_iterations=""; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --dinov2) dinov2="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --official-iterations) official_iterations="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "error: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
[ -x .build/release/dinov2-fsdp ] || { echo "error: build first: swift build -c release" >&2; exit 2; }
binary=.build/release/dinov2-fsdp
mkdir -p "$output" "$work"
data="$("$binary" data embedded)"
prototypes="$("$binary" config --config "$config" "${overrides[@]}" | awk '/^dino:/{d=1} d && /head_n_prototypes:/{print $2; exit}')"

rm -rf "$work/ours"
echo "== ours: Launch/mpirun.sh -n $ranks dinov2-fsdp train --config $config ${overrides[*]}"
Launch/mpirun.sh -n "$ranks" dinov2-fsdp train --config "$config" --output "$work/ours" "${overrides[@]}"
cp "$work/ours/metrics.jsonl" "$output/ours.jsonl"
runs=(--run "ours=$output/ours.jsonl")

if [ -n "$dinov2" ]; then
  echo "== official modules: Benchmarks/reference/official_recipe.py --ranks $ranks"
  python3 Benchmarks/reference/official_recipe.py --dinov2 "$dinov2" --config "$config" --data "$data" \
    --ranks "$ranks" --threads "$threads" --output "$output/official.jsonl" \
    ${official_iterations:+--max-iterations "$official_iterations"} "${overrides[@]}"
  runs+=(--run "official modules=$output/official.jsonl")
fi

"$binary" bench learning-report "${runs[@]}" --output "$output" --prototypes "$prototypes" \
  --title "Learning benchmark: $config on the embedded dataset, $ranks ranks"
