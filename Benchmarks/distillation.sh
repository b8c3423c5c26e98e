#!/usr/bin/env bash
# The distillation benchmark (issue #20, README "Distillation"): does a student distilled from the
# learning benchmark's final model reach that teacher's k-NN sooner than the same student trained from
# scratch reaches its own best?
#   1. the teacher and the from-scratch curve: TEACHER (default runs/learning/ours, what
#      Benchmarks/learning.sh writes; run that first) and its metrics.jsonl;
#   2. Configs/small-data-distill.yaml (the small-data recipe, distillation.checkpoint_path=TEACHER) under
#      Launch/mpirun.sh -n RANKS, k-NN of the student's spare EMA every 100 iterations;
#   3. OUTPUT/learning.csv and OUTPUT/learning.svg with both curves (bench learning-report), and the
#      iteration and minute at which each run first reached the teacher's final k-NN.
# Usage: Benchmarks/distillation.sh [--ranks 8] [--teacher runs/learning/ours] [--work runs/distill]
#                                   [--output Benchmarks/distillation] [key=value ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ranks=8; teacher=runs/learning/ours; work=runs/distill; output=Benchmarks/distillation; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --teacher) teacher="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "error: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
[ -x .build/release/dinov2-fsdp ] || { echo "error: build first: swift build -c release" >&2; exit 2; }
[ -f "$teacher/metrics.jsonl" ] || {
  echo "error: no teacher run in $teacher (no metrics.jsonl); run Benchmarks/learning.sh first or pass --teacher" >&2
  exit 2
}
binary=.build/release/dinov2-fsdp
mkdir -p "$output"
rm -rf "$work"
echo "== distilled: Launch/mpirun.sh -n $ranks dinov2-fsdp train --config Configs/small-data-distill.yaml"
Launch/mpirun.sh -n "$ranks" dinov2-fsdp train --config Configs/small-data-distill.yaml --output "$work" \
  "distillation.checkpoint_path=$teacher" "${overrides[@]}"
cp "$teacher/metrics.jsonl" "$output/scratch.jsonl"
cp "$work/metrics.jsonl" "$output/distilled.jsonl"
"$binary" bench learning-report --run "from scratch (the teacher's own run)=$output/scratch.jsonl" \
  --run "distilled from its final model=$output/distilled.jsonl" --output "$output" --prototypes 256 \
  --title "Distillation: the small-data student from scratch and distilled from the scratch run's final model"

# When each run first reached the teacher's final k-NN (the scratch run's value at its end).
python3 - "$output/scratch.jsonl" "$output/distilled.jsonl" <<'PY'
import json, sys
def curve(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [(r["iteration"], r.get("elapsed_seconds", 0) / 60, r["knn_top1"]) for r in rows if "knn_top1" in r]
scratch, distilled = curve(sys.argv[1]), curve(sys.argv[2])
target = scratch[-1][2]
best = max(scratch, key=lambda r: (r[2], -r[0]))
print(f"teacher's k-NN (scratch run at its end): {target:.1f} %")
print(f"scratch: best {best[2]:.1f} % first at iteration {best[0]} ({best[1]:.1f} min)")
hit = next((r for r in distilled if r[2] >= target), None)
if hit:
    print(f"distilled: reached {target:.1f} % at iteration {hit[0]} ({hit[1]:.1f} min), {hit[2]:.1f} %")
else:
    print(f"distilled: never reached {target:.1f} % (best {max(r[2] for r in distilled):.1f} %)")
PY
