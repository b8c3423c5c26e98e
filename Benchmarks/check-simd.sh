#!/usr/bin/env bash
# Checks that the release build vectorises for this CPU: counts vector instructions on the CPU's widest
# registers (zmm with AVX-512, else ymm) and FMA instructions in SIMD kernels of the release binary.
# Swift's default x86-64 target is SSE2: without the `-target-cpu` flag of Package.swift, SIMD16 code
# becomes scalar libm calls and shows neither.
#   Benchmarks/check-simd.sh [binary]      (default: .build/release/dinov2-fsdp)
set -euo pipefail
binary="${1:-$(cd "$(dirname "$0")/.." && pwd)/.build/release/dinov2-fsdp}"
[ -x "$binary" ] || { echo "error: $binary not built (swift build -c release)" >&2; exit 2; }
if grep -q -w avx512f /proc/cpuinfo; then register=zmm; else register=ymm; fi
disassembly=$(objdump -d --no-show-raw-insn "$binary")
status=0
# name in the report, then strings that must all appear in the mangled symbol
for kernel in "VectorOps.sumOfSquares VectorOps sumOfSquares" "VectorOps.lerp VectorOps lerp" \
  "Float.gelu DinoKernelsE4gelu" "Float.geluBackward DinoKernelsE12geluBackward"; do
  read -r name first second <<<"$kernel"
  body=$(awk -v a="$first" -v b="${second:-$first}" '
    /^[0-9a-f]+ <.*>:$/ { inside = index($0, a) && index($0, b) }
    inside' <<<"$disassembly")
  wide=$(grep -c "$register" <<<"$body" || true)
  fma=$(grep -cE "vfmadd|vfnmadd|vfmsub" <<<"$body" || true)
  echo "$name: $wide instructions on $register registers, $fma FMA"
  [ "$wide" -gt 0 ] && [ "$fma" -gt 0 ] || status=1
done
if [ $status -eq 0 ]; then echo "ok: $register SIMD with FMA in the kernels"
else echo "FAIL: a kernel without $register SIMD or FMA; build with -target-cpu for this CPU"; fi
exit $status
