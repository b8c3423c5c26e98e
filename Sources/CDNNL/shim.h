// oneDNN's C API (Debian's libdnnl-dev, built on OpenMP), for bf16 matrix products on AVX512-BF16
// and AMX. oneDNN runs its kernels on libgomp's thread pool (a dependency of libdnnl, found at run
// time: see BF16GEMM.setThreadCount).
#ifndef DINO_DNNL_SHIM_H
#define DINO_DNNL_SHIM_H
#include <oneapi/dnnl/dnnl.h>
#endif
