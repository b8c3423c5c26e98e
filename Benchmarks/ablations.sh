#!/usr/bin/env bash
# The small-data recipe's ablations: each deviation of Configs/small-data.yaml from the official
# recipe put back to the official value, one at a time, at the zero-argument run's budget
# (Configs/quickstart.yaml: the recipe at 200 iterations, k-NN before step 1, at 100 and at 200),
# under Launch/mpirun.sh -n RANKS on the embedded dataset. Writes OUTPUT/learning.csv and
# OUTPUT/learning.svg (every run's curves side by side) and prints a summary line per run.
# Usage: Benchmarks/ablations.sh [--ranks 8] [--binary .build/release/dinov2-fsdp]
#                                [--output Benchmarks/ablations] [--work runs/ablations] [NAME ...]
# NAME picks runs from the list below (default: all). Each run takes about 7 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# name | overrides (the official value of one deviation; "recipe" is the recipe itself)
runs=(
  "recipe|"
  "prototypes-1024|dino.head_n_prototypes=1024 ibot.head_n_prototypes=1024"
  "softmax-centering|train.centering=centering"
  "teacher-temp-0.04-0.07|teacher.warmup_teacher_temp=0.04 teacher.teacher_temp=0.07 teacher.warmup_teacher_temp_epochs=3"
  "momentum-0.992|teacher.momentum_teacher=0.992"
  "drop-path-0.3|student.drop_path_rate=0.3"
  "freeze-last-layer-1-epoch|optim.freeze_last_layer_epochs=1"
  "layerscale-1e-5|student.layerscale=1.0e-05"
)

ranks=8; binary=.build/release/dinov2-fsdp; output=Benchmarks/ablations; work=runs/ablations; picked=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see $0 --help)" >&2; exit 2 ;;
    *) picked+=("$1"); shift ;;
  esac
done
[ -x "$binary" ] || { echo "error: $binary is not built: swift build -c release" >&2; exit 2; }
mkdir -p "$output" "$work"

report=()
for entry in "${runs[@]}"; do
  name="${entry%%|*}"; overrides="${entry#*|}"
  if [ ${#picked[@]} -gt 0 ] && [[ ! " ${picked[*]} " == *" $name "* ]]; then continue; fi
  rm -rf "${work:?}/$name"
  echo "== $name: train --config Configs/quickstart.yaml $overrides"
  # shellcheck disable=SC2086  # the overrides are separate words
  Launch/mpirun.sh -n "$ranks" "$binary" train --config Configs/quickstart.yaml --output "$work/$name" $overrides
  cp "$work/$name/metrics.jsonl" "$output/$name.jsonl"
  report+=(--run "$name=$output/$name.jsonl")
done
# Every run's metrics in OUTPUT, also those of earlier invocations, go into the report.
for file in "$output"/*.jsonl; do
  name="$(basename "$file" .jsonl)"
  [[ " ${report[*]-} " == *"$name=$file"* ]] || report+=(--run "$name=$file")
done
"$binary" bench learning-report "${report[@]}" --output "$output" --prototypes 256 \
  --title "Ablations of the small-data recipe at the quickstart budget (200 iterations), $ranks ranks"
