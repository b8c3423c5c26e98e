#!/usr/bin/env bash
# The curation benchmark: nearest-neighbour search of `dinov2-fsdp curate` on generated features, against
# Faiss (Debian's libfaiss-dev, the paper's library) on the same vectors, and the embedding stage's speed.
#   1. for each pool size (default 10^5 and 10^6 vectors of dimension 384, 1000 queries, k 10):
#      `bench curation` on 1 rank (dumping the vectors) and on --ranks ranks: exact queries/s, the inverted
#      index's training time, filling vectors/s per rank, queries/s and recall@10 at each probe count;
#      then Benchmarks/faiss/faiss_search.cpp (one thread, OPENBLAS_NUM_THREADS=1) on the dumped vectors
#      with the same lists, training subset and probes. Ours and Faiss alternate --repeats times;
#   2. the features stage of `curate` (images/s per rank) on the embedded dataset's 4000 training images,
#      with a ViT-S/14 at 224 px and the quickstart model (width 192 at 112 px), on 1 and --ranks ranks.
# Usage: Benchmarks/curation.sh [--sizes "100000 1000000"] [--ranks 2] [--probes "4,16,64"] [--output DIR]
# Prints every line and writes OUTPUT/curation.log; the table in Benchmarks/RESULTS.md was made from it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
sizes="100000 1000000"; ranks=2; probes="4,16,64"; output=runs/curation-bench; repeats=2
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --probes) probes="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
[ -x .build/release/dinov2-fsdp ] || { echo "error: build first: swift build -c release" >&2; exit 2; }
[ -f /usr/include/faiss/IndexIVFFlat.h ] ||
  { echo "error: install Faiss: apt-get install libfaiss-dev liblapack-dev" >&2; exit 2; }
mkdir -p "$output"
binary="$root/.build/release/dinov2-fsdp"
exec > >(tee "$output/curation.log") 2>&1
g++ -O3 -march=native -o "$output/faiss_search" Benchmarks/faiss/faiss_search.cpp -lfaiss -lopenblas -llapack -fopenmp
for n in $sizes; do
  lists=$(python3 -c "print(max(1, round(4 * $n ** 0.5)))")
  dump="$output/vectors-$n"; mkdir -p "$dump"
  for r in $(seq "$repeats"); do
    echo "== pool $n, round $r: ours, 1 rank"
    "$binary" bench curation --pool "$n" --probes "$probes" --dump "$dump" --json "$output/ours-$n-1rank-$r.json"
    echo "== pool $n, round $r: faiss, 1 thread"
    OPENBLAS_NUM_THREADS=1 "$output/faiss_search" "$dump" 384 "$lists" 10 ${probes//,/ } 2>&1 | grep -v '^WARNING'
    echo "== pool $n, round $r: ours, $ranks ranks"
    Launch/mpirun.sh -n "$ranks" "$binary" bench curation --pool "$n" --probes "$probes" \
      --json "$output/ours-$n-${ranks}ranks-$r.json"
  done
  rm -rf "$dump"
done
data="$("$binary" data embedded)"
Launch/mpirun.sh -n 1 "$binary" train --config Configs/quickstart.yaml train.stop_iteration=1 \
  --output "$output/quickstart" > /dev/null
Launch/mpirun.sh -n 1 "$binary" train --config Configs/vits14.yaml --data "$data/train" train.batch_size_per_gpu=2 \
  train.stop_iteration=1 --output "$output/vits14" > /dev/null
for model in quickstart vits14; do
  for n in 1 "$ranks"; do
    echo "== features stage: $model, $n rank(s)"
    rm -rf "$output/curate-$model-$n"
    Launch/mpirun.sh -n "$n" "$binary" curate --pool "$data/train" --queries "$data/val" \
      --checkpoint "$output/$model" --output "$output/curate-$model-$n" --stop-after features | grep features
  done
done
