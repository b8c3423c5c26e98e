// fp32 products of the linear layers (rows = 1828 tokens; widths 192 and 384: qkv, proj, fc1, fc2 as
// K x N) on one thread: oneDNN's fp32 matmul against OpenBLAS sgemm, forward (X W^T), dInput (G W) and
// dWeight (G^T X), best of 9 each. The check behind RESULTS' "oneDNN fp32 on the narrow products" note.
//   cc -O2 Benchmarks/gemm-check/onednn_vs_openblas.c -o /tmp/onednn_vs_openblas -ldnnl -lopenblas
//   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Zen /tmp/onednn_vs_openblas
// (OPENBLAS_CORETYPE as dinov2-fsdp picks it for the CPU: Zen, Haswell, SkylakeX or Cooperlake.)
#include <oneapi/dnnl/dnnl.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void check(dnnl_status_t status, const char *what) {
    if (status != dnnl_success) {
        fprintf(stderr, "oneDNN failed: %s (status %d)\n", what, (int)status);
        exit(1);
    }
}

static dnnl_engine_t engine;
static dnnl_stream_t stream;

// C[m, n] = op(A) op(B): A stored [k, m] when transposeA, else [m, k]; B stored [n, k] when transposeB.
static double onednn(int m, int n, int k, int transposeA, int transposeB, float *a, float *b, float *c) {
    dnnl_dims_t aDims = {m, k}, bDims = {k, n}, cDims = {m, n};
    dnnl_dims_t aStrides = {transposeA ? 1 : k, transposeA ? m : 1};
    dnnl_dims_t bStrides = {transposeB ? 1 : n, transposeB ? k : 1};
    dnnl_dims_t cStrides = {n, 1};
    dnnl_memory_desc_t aDesc, bDesc, cDesc;
    check(dnnl_memory_desc_init_by_strides(&aDesc, 2, aDims, dnnl_f32, aStrides), "A");
    check(dnnl_memory_desc_init_by_strides(&bDesc, 2, bDims, dnnl_f32, bStrides), "B");
    check(dnnl_memory_desc_init_by_strides(&cDesc, 2, cDims, dnnl_f32, cStrides), "C");
    dnnl_matmul_desc_t matmul;
    check(dnnl_matmul_desc_init(&matmul, &aDesc, &bDesc, NULL, &cDesc), "matmul");
    dnnl_primitive_desc_t descriptor;
    check(dnnl_primitive_desc_create(&descriptor, &matmul, NULL, engine, NULL), "primitive descriptor");
    dnnl_primitive_t primitive;
    check(dnnl_primitive_create(&primitive, descriptor), "primitive");
    dnnl_memory_t aMemory, bMemory, cMemory;
    check(dnnl_memory_create(&aMemory, &aDesc, engine, a), "A memory");
    check(dnnl_memory_create(&bMemory, &bDesc, engine, b), "B memory");
    check(dnnl_memory_create(&cMemory, &cDesc, engine, c), "C memory");
    dnnl_exec_arg_t arguments[3] = {{DNNL_ARG_SRC, aMemory}, {DNNL_ARG_WEIGHTS, bMemory}, {DNNL_ARG_DST, cMemory}};
    double best = 1e9;
    for (int r = 0; r < 9; r++) {
        double t = now();
        check(dnnl_primitive_execute(primitive, stream, 3, arguments), "execute");
        check(dnnl_stream_wait(stream), "wait");
        t = now() - t;
        if (t < best) best = t;
    }
    dnnl_memory_destroy(aMemory);
    dnnl_memory_destroy(bMemory);
    dnnl_memory_destroy(cMemory);
    dnnl_primitive_destroy(primitive);
    dnnl_primitive_desc_destroy(descriptor);
    return best;
}

static double openblas(int m, int n, int k, int transposeA, int transposeB, float *a, float *b, float *c) {
    double best = 1e9;
    for (int r = 0; r < 9; r++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    m, n, k, 1, a, transposeA ? m : k, b, transposeB ? k : n, 0, c, n);
        t = now() - t;
        if (t < best) best = t;
    }
    return best;
}

int main(void) {
    check(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine");
    check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
    const int rows = 1828;
    const int shapes[][2] = {{192, 576}, {192, 192}, {192, 768}, {768, 192}, {384, 1152}, {384, 384},
                             {384, 1536}, {1536, 384}};
    float *x = aligned_alloc(64, 4L * rows * 1536), *w = aligned_alloc(64, 4L * 1536 * 1536);
    float *g = aligned_alloc(64, 4L * rows * 1536), *c = aligned_alloc(64, 4L * rows * 1536);
    for (long i = 0; i < (long)rows * 1536; i++) { x[i] = (i % 7) * 0.1f; g[i] = (i % 5) * 0.1f; }
    for (long i = 0; i < 1536L * 1536; i++) w[i] = (i % 3) * 0.1f;
    printf("GFLOP/s on one thread, oneDNN / OpenBLAS\n");
    for (int s = 0; s < 8; s++) {
        int k = shapes[s][0], n = shapes[s][1];
        double gflop = 2.0 * rows * k * n / 1e9;
        double f1 = onednn(rows, n, k, 0, 1, x, w, c), f2 = openblas(rows, n, k, 0, 1, x, w, c);
        double d1 = onednn(rows, k, n, 0, 0, g, w, c), d2 = openblas(rows, k, n, 0, 0, g, w, c);
        double w1 = onednn(n, k, rows, 1, 0, g, x, c), w2 = openblas(n, k, rows, 1, 0, g, x, c);
        printf("K %4d N %4d  forward %5.1f / %5.1f  dInput %5.1f / %5.1f  dWeight %5.1f / %5.1f\n", k, n,
               gflop / f1, gflop / f2, gflop / d1, gflop / d2, gflop / w1, gflop / w2);
    }
    return 0;
}
