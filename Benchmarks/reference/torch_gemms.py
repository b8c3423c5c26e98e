"""Times PyTorch's linear-layer products on the shapes `dinov2-fsdp bench kernels` times (rows = 914 x
images tokens; widths 384 and 192: qkv, proj, fc1, fc2), forward (x @ W^T + b) and backward (dX = dY @ W,
dW = dY^T @ x, db = column sums of dY, as autograd computes them), with the sgemm peak of its BLAS
measured in the same run (best of 1024^3 and 2048^3, two trials), so that Benchmarks/compare-torch.sh
can put both libraries' efficiency on the step's shapes side by side.

    python3 Benchmarks/reference/torch_gemms.py [--threads 1] [--images 2] [--repeats 5] [--json out.json]
Records: name (as bench kernels: linear_qkv_fwd, linear192_fc2_bwd, ...), seconds (median), gflops,
peak_ratio. Needs torch.
"""
import argparse
import json
import statistics
import time

import torch


def median_seconds(repeats, body):
    body()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sgemm_peak(repeats):
    best = 0.0
    for _ in range(2):
        for n in (1024, 2048):
            a, b = torch.rand(n, n), torch.rand(n, n)
            seconds = median_seconds(repeats, lambda: torch.mm(a, b))
            best = max(best, 2.0 * n**3 / seconds / 1e9)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = sgemm_peak(args.repeats)
    rows = 914 * args.images
    records = []
    with torch.no_grad():
        for prefix, d in (("linear", 384), ("linear192", 192)):
            for name, fan_in, fan_out in (("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, 4 * d), ("fc2", 4 * d, d)):
                x, w, b = torch.rand(rows, fan_in), torch.rand(fan_out, fan_in), torch.rand(fan_out)
                dy = torch.rand(rows, fan_out)
                flops = 2.0 * rows * fan_in * fan_out
                forward = median_seconds(args.repeats, lambda: torch.addmm(b, x, w.t()))

                def backward():
                    torch.mm(dy, w)
                    torch.mm(dy.t(), x)
                    dy.sum(0)

                seconds = median_seconds(args.repeats, backward)
                for direction, t, f in (("fwd", forward, flops), ("bwd", seconds, 2 * flops)):
                    records.append({"name": f"{prefix}_{name}_{direction}", "seconds": t, "gflops": f / t / 1e9,
                                    "peak_ratio": f / t / 1e9 / peak,
                                    "detail": f"[{rows}, {fan_in}] x [{fan_out}, {fan_in}]^T"})
    records.append({"name": "sgemm_peak", "seconds": 0.0, "gflops": peak, "peak_ratio": 1.0,
                    "detail": f"torch {torch.__version__}, {args.threads} thread(s)"})
    for r in records:
        print(f"{r['name']:24s} {r['gflops']:7.1f} GFLOP/s  {r['peak_ratio']:.3f} of peak")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
