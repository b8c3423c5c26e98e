#!/usr/bin/env bash
# Training-step throughput of dinov2-fsdp against the official DINOv2 modules in PyTorch, same work
# per image (2 x 224 + 8 x 98 crops, shared head, Sinkhorn-Knopp, drop path 0), same cores, in one
# run: for each model and precision, ours (1 rank x all cores; and 2 ranks x 1 thread, FULL_SHARD,
# half the batch each) and PyTorch (Benchmarks/reference/torch_step.py, fp32 or bf16 autocast),
# interleaved, --rounds times; the table shows medians of images/s, the ratios, and the MFU of both
# (our exact FLOP count of the step over the 2-core sgemm peak bench step measured in the same run), so
# that a ratio target reads as the MFU it asks for. Each round also times the linear layers' products
# on one thread in both libraries (bench kernels, Benchmarks/reference/torch_gemms.py: GFLOP/s and the
# fraction of each library's own sgemm peak).
# bf16 runs only where the CPU has AVX512-BF16 or AMX (elsewhere ours computes in fp32 and PyTorch's
# autocast takes unaccelerated bf16 paths); --precisions overrides.
#
#   Benchmarks/compare-torch.sh --dinov2 PATH [--rounds 3] [--steps 3] [--precisions "fp32 bf16"]
#       [--output Benchmarks/compare-torch] [--table-only]
# --table-only rebuilds the table from the files already in --output.
# Needs torch and omegaconf (pip) and a checkout of github.com/facebookresearch/dinov2.
set -euo pipefail
cd "$(dirname "$0")/.."

dinov2="${DINOV2_ROOT:-}"
rounds=3
steps=3
output=Benchmarks/compare-torch
if grep -q -w -E "avx512_bf16|amx_bf16" /proc/cpuinfo; then precisions="fp32 bf16"; else precisions=""; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --dinov2) dinov2="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --precisions) precisions="$2"; shift 2 ;;
    --table-only) rounds=0; shift ;;
    *) echo "compare-torch.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ "$rounds" != 0 ] && ! [ -d "$dinov2/dinov2" ]; then
  echo "compare-torch.sh: pass --dinov2 PATH, a checkout of facebookresearch/dinov2" >&2; exit 2
fi
binary=.build/release/dinov2-fsdp
[ "$rounds" = 0 ] || [ -x "$binary" ] || swift build -c release --product dinov2-fsdp
cores=$(nproc)
mkdir -p "$output"
if [ "$rounds" = 0 ]; then
  precisions="fp32 bf16"  # the table keeps those with files
elif [ -z "$precisions" ]; then
  precisions=fp32
  echo "compare-torch.sh: this CPU has no AVX512-BF16 or AMX: fp32 only (--precisions to force)" >&2
fi
[ "$rounds" = 0 ] || grep -m1 "model name" /proc/cpuinfo | sed 's/.*: //' >"$output/cpu.txt"

common="student.drop_path_rate=0 train.centering=sinkhorn_knopp crops.local_crops_size=98"
declare -A batch=([vits14]=4 [w192]=8)
declare -A models=(
  [vits14]="$common"
  [w192]="student.embed_dim=192 student.depth=12 student.num_heads=3 dino.head_n_prototypes=4096
    ibot.head_n_prototypes=4096 $common"
)

for round in $(seq 1 "$rounds"); do
  echo "== gemms-r$round" >&2
  "$binary" bench kernels --json "$output/ours-gemms-r$round.json" >/dev/null
  python3 Benchmarks/reference/torch_gemms.py --json "$output/torch-gemms-r$round.json" >/dev/null
  for model in vits14 w192; do
    overrides="train.batch_size_per_gpu=${batch[$model]} ${models[$model]}"
    halved="train.batch_size_per_gpu=$((batch[$model] / 2)) ${models[$model]}"
    for precision in $precisions; do
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

python3 - "$output" "$cores" "$precisions" <<'EOF'
import glob, json, os, statistics, sys
folder, cores = sys.argv[1], sys.argv[2]
precisions = [p for p in sys.argv[3].split() if glob.glob(os.path.join(folder, f"torch-*-{p}-r*.json"))]
def values(pattern, key):
    return [json.load(open(f))[key] for f in sorted(glob.glob(os.path.join(folder, pattern)))]
def median(pattern, key):
    found = values(pattern, key)
    return statistics.median(found) if found else float("nan")
cpu_file = os.path.join(folder, "cpu.txt")
cpu = open(cpu_file).read().strip() if os.path.exists(cpu_file) else "not recorded"
rows = [f"CPU: {cpu}, {cores} cores. MFU: our FLOP count of the step over the {cores}-core peak bench step measured",
        "(sgemm, or the bf16 GEMM peak for bf16; the median of our 1-rank runs' peaks) for both; `needs MFU` is",
        "what ours would need for the target.", "",
        f"| model | precision | ours 1 x {cores} | ours 2 x 1 | PyTorch | ours best / PyTorch | "
        "MFU ours / PyTorch | target | needs MFU | runs |",
        "|---|---|---|---|---|---|---|---|---|---|"]
def records(pattern):
    found = {}
    for f in sorted(glob.glob(os.path.join(folder, pattern))):
        for r in json.load(open(f)):
            found.setdefault(r["name"], []).append(r)
    return found
targets = {("vits14", "fp32"): 1.4, ("w192", "fp32"): 1.3, ("vits14", "bf16"): 1.2, ("w192", "bf16"): 1.2}
table = {}
for model, name in (("vits14", "ViT-S/14, K 65536, batch 4"), ("w192", "width 192 / depth 12, K 4096, batch 8")):
    for precision in precisions:
        tag = f"{model}-{precision}-r*.json"
        one, two = median(f"ours-1x{cores}-{tag}", "images_per_sec"), median(f"ours-2x1-{tag}", "images_per_sec")
        torch = median(f"torch-{tag}", "images_per_sec")
        n = len(values(f"torch-{tag}", "images_per_sec"))
        table[(model, precision)] = (one, two)
        # Images per second into model FLOP/s: FLOPs per step over the images of one step (whole batch);
        # the peak bench step divided by (sgemm, or the bf16 GEMM peak for bf16 runs), as FLOP/s.
        runs = f"ours-1x{cores}-{tag}"
        flops = median(runs, "flops_per_step") / median(runs, "images_per_rank")
        peak = statistics.median(g / m for g, m in zip(values(runs, "model_gflops_per_sec"), values(runs, "mfu")))
        peak *= 1e9
        best = max(one, two)
        target = targets[(model, precision)]
        label = "fp32" if precision == "fp32" else "bf16 (ours) / bf16 autocast (PyTorch)"
        rows.append(f"| {name} | {label} | {one:.2f} | {two:.2f} | {torch:.2f} | {best / torch:.2f}x | "
                    f"{best * flops / peak:.2f} / {torch * flops / peak:.2f} | {target}x | "
                    f"{target * torch * flops / peak:.2f} | {n} |")
if "bf16" in precisions and "fp32" in precisions:
    for model in ("vits14", "w192"):
        (one32, two32), (one16, two16) = table[(model, "fp32")], table[(model, "bf16")]
        rows.append(f"| {model}: our bf16 / our fp32 | | {one16 / one32:.2f}x | {two16 / two32:.2f}x | | | | | | |")
ours, theirs = records("ours-gemms-r*.json"), records("torch-gemms-r*.json")
if theirs:
    rows += ["", "Linear-layer products on one thread (GFLOP/s and fraction of the library's own sgemm peak, medians):",
             "", "| product | ours (OpenBLAS) | PyTorch | ours / PyTorch |", "|---|---|---|---|"]
for name in theirs:
    if name == "sgemm_peak" or name not in ours:
        continue
    a = statistics.median(r["gflops"] for r in ours[name])
    pa = statistics.median(r["peak_ratio"] for r in ours[name])
    b = statistics.median(r["gflops"] for r in theirs[name])
    pb = statistics.median(r["peak_ratio"] for r in theirs[name])
    rows.append(f"| {name} {ours[name][0]['detail'].split(', dInput')[0]} | {a:.1f} ({pa:.2f}) | {b:.1f} ({pb:.2f}) | "
                f"{a / b:.2f}x |")
if "sgemm_peak" in theirs:
    peak = statistics.median(r["gflops"] for r in theirs["sgemm_peak"])
    mine = statistics.median(r["gflops"] for r in ours.get("sgemm_peak", [{"gflops": float("nan")}]))
    rows.append(f"| sgemm peak, 1 thread | {mine:.1f} | {peak:.1f} | {mine / peak:.2f}x |")
text = "\n".join(rows)
print(text)
open(os.path.join(folder, "table.md"), "w").write(text + "\n")
EOF
