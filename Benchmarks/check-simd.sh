#!/usr/bin/env bash
# Checks that the release build vectorises for this CPU: counts 512-bit (zmm) and FMA instructions
# in the SIMD kernels of the release binary. Swift's default x86-64 target is SSE2: without the
# `-target-cpu` flag of Package.swift, SIMD16 code becomes scalar libm calls and shows 0 zmm.
#   Benchmarks/check-simd.sh [binary]      (default: .build/release/dinov2-fsdp)
set -euo pipefail
binary="${1:-$(cd "$(dirname "$0")/.." && pwd)/.build/release/dinov2-fsdp}"
[ -x "$binary" ] || { echo "error: $binary not built (swift build -c release)" >&2; exit 2; }
status=0
for symbol in sumOfSquares lerp; do
  body=$(objdump -d --no-show-raw-insn "$binary" | awk -v s="$symbol" '
    /^[0-9a-f]+ <.*>:$/ { inside = index($0, "VectorOps") && index($0, s) }
    inside')
  zmm=$(grep -c zmm <<<"$body" || true)
  fma=$(grep -cE "vfmadd|vfnmadd" <<<"$body" || true)
  echo "VectorOps.$symbol: $zmm instructions on zmm registers, $fma FMA"
  [ "$zmm" -gt 0 ] || status=1
done
[ $status -eq 0 ] && echo "ok: 512-bit SIMD in the kernels" || echo "FAIL: no 512-bit SIMD; build with -target-cpu for an AVX-512 CPU"
exit $status
