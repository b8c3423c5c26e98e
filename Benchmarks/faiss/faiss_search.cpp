// The reference for `bench curation`: Faiss (Debian's libfaiss-dev, CPU, one thread) on the same vectors,
// dumped by `dinov2-fsdp bench curation --dump DIR` (pool.f32 [n, d], queries.f32 [q, d], unit rows).
// Times IndexFlatIP (exact inner product = cosine), and IndexIVFFlat (inner product) trained with 10
// k-means iterations on the same strided subset as ours (every step-th row, about 64 per list), filled
// with the whole pool, searched at each probe count with recall@k against the flat answers.
// Build and run: Benchmarks/curation.sh (g++ -O3 -march=native ... -lfaiss -lopenblas -llapack -fopenmp).
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

static std::vector<float> readFloats(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) { std::fprintf(stderr, "error: cannot open %s\n", path.c_str()); std::exit(2); }
    std::fseek(f, 0, SEEK_END);
    long bytes = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    std::vector<float> values(bytes / 4);
    if (std::fread(values.data(), 4, values.size(), f) != values.size()) std::exit(2);
    std::fclose(f);
    return values;
}

static double since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int main(int argc, char** argv) {
    if (argc < 6) {
        std::fprintf(stderr, "usage: faiss_search DIR DIMENSION LISTS K PROBES...\n");
        return 2;
    }
    std::string dir = argv[1];
    int d = std::atoi(argv[2]), lists = std::atoi(argv[3]), k = std::atoi(argv[4]);
    omp_set_num_threads(1);
    std::vector<float> pool = readFloats(dir + "/pool.f32"), queries = readFloats(dir + "/queries.f32");
    long n = pool.size() / d, q = queries.size() / d;

    faiss::IndexFlatIP flat(d);
    auto t = std::chrono::steady_clock::now();
    flat.add(n, pool.data());
    std::vector<float> exactScores(q * k);
    std::vector<faiss::Index::idx_t> exact(q * k);
    t = std::chrono::steady_clock::now();
    flat.search(q, queries.data(), k, exactScores.data(), exact.data());
    double exactSeconds = since(t);
    std::printf("faiss exact: %ld queries in %.2f s: %.1f queries/s\n", q, exactSeconds, q / exactSeconds);

    long step = std::max(1L, n / (64L * lists));
    std::vector<float> training;
    for (long i = 0; i < n; i += step) training.insert(training.end(), &pool[i * d], &pool[i * d] + d);
    faiss::IndexFlatIP quantizer(d);
    faiss::IndexIVFFlat index(&quantizer, d, lists, faiss::METRIC_INNER_PRODUCT);
    index.cp.niter = 10;
    index.cp.spherical = true;
    t = std::chrono::steady_clock::now();
    index.train(training.size() / d, training.data());
    double trainSeconds = since(t);
    t = std::chrono::steady_clock::now();
    index.add(n, pool.data());
    double addSeconds = since(t);
    std::printf("faiss ivf: %d lists trained in %.1f s, %ld vectors filed in %.2f s (%.0f vectors/s)\n", lists,
                trainSeconds, n, addSeconds, n / addSeconds);
    std::vector<float> scores(q * k);
    std::vector<faiss::Index::idx_t> found(q * k);
    for (int a = 5; a < argc; a++) {
        int probes = std::atoi(argv[a]);
        index.nprobe = probes;
        t = std::chrono::steady_clock::now();
        index.search(q, queries.data(), k, scores.data(), found.data());
        double seconds = since(t);
        long hits = 0;
        for (long i = 0; i < q; i++) {
            std::set<faiss::Index::idx_t> truth(&exact[i * k], &exact[i * k] + k);
            for (int j = 0; j < k; j++) hits += truth.count(found[i * k + j]);
        }
        std::printf("faiss ivf probes %d: %.1f queries/s, recall@%d %.4f\n", probes, q / seconds, k,
                    double(hits) / double(q * k));
    }
    return 0;
}
