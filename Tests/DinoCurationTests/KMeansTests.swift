// Spherical k-means: planted clusters (8 directions, members within ~0.1 of theirs) are recovered with
// purity 1; the pool cut into 2, 3 and 4 shards gives the 1-shard centroids bit for bit (the integer
// sums add exactly in any order); the initial rows are distinct and the same for the same seed.

import DinoCore
import DinoCuration
import DinoTestSupport
import Testing

@Suite("curation: k-means over a sharded pool")
struct KMeansTests {
    /// `perCluster` members around each of `clusters` random directions in `d` dims, interleaved
    /// (row i belongs to cluster i % clusters), unit length.
    static func planted(clusters: Int, perCluster: Int, d: Int, seed: UInt64) -> [Float] {
        var random = TestRandom(seed: seed)
        let centres = random.normals(clusters * d)
        var rows: [Float] = []
        for i in 0..<(clusters * perCluster) {
            let c = i % clusters
            let noise = random.normals(d, scale: 0.1 / Double(d).squareRoot())
            var x = (0..<d).map { centres[c * d + $0] / 4 + noise[$0] }
            let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
            x = x.map { $0 / norm }
            rows += x.map { Float($0) }
        }
        return rows
    }

    @Test("planted clusters recovered with purity 1")
    func plantedClusters() throws {
        let k = 8, d = 24, n = 8 * 150
        let rows = Self.planted(clusters: k, perCluster: 150, d: d, seed: 5)
        let result = try rows.withUnsafeBufferPointer {
            try KMeans.run(
                rows: $0.baseAddress!, range: 0..<n, poolSize: n, dimension: d, k: k, iterations: 10, seed: 3,
                communicator: SingleProcessCommunicator())
        }
        // Every found cluster holds members of one planted cluster only, and every planted one is found.
        var planted: [Int: Set<Int>] = [:]
        for (i, member) in result.assignment.enumerated() { planted[member.cluster, default: []].insert(i % k) }
        #expect(planted.count == k && planted.values.allSatisfy { $0.count == 1 }, "\(planted)")
        #expect(result.assignment.allSatisfy { $0.similarity > 0.9 })
    }

    @Test("2, 3 and 4 shards: the 1-shard centroids bit for bit", arguments: [2, 3, 4])
    func shardsAgree(shards: Int) throws {
        let k = 6, d = 16, n = 1000, iterations = 5
        let rows = Self.planted(clusters: 9, perCluster: 112, d: d, seed: 8).prefix(n * d).map { $0 }
        let initial = try rows.withUnsafeBufferPointer {
            try KMeans.initialCentroids(
                rows: $0.baseAddress!, range: 0..<n, poolSize: n, dimension: d, k: k, seed: 1,
                communicator: SingleProcessCommunicator())
        }
        #expect(Set(initial.rows).count == k)
        var centroids = initial.centroids
        var sharded = centroids
        let cuts = (0...shards).map { n * $0 / shards }
        rows.withUnsafeBufferPointer { all in
            let base = all.baseAddress!
            for _ in 0..<iterations {
                let whole = KMeans.accumulate(
                    rows: base, dimension: d,
                    assignment: KMeans.assign(rows: base, count: n, dimension: d, centroids: centroids, k: k), k: k)
                centroids = KMeans.update(centroids: centroids, sums: whole.sums, counts: whole.counts, dimension: d)
                var sums = [Int64](repeating: 0, count: k * d), counts = [Int64](repeating: 0, count: k)
                for s in 0..<shards {
                    let part = base + cuts[s] * d, count = cuts[s + 1] - cuts[s]
                    let local = KMeans.accumulate(
                        rows: part, dimension: d,
                        assignment: KMeans.assign(rows: part, count: count, dimension: d, centroids: sharded, k: k),
                        k: k)
                    for i in sums.indices { sums[i] += local.sums[i] }
                    for i in counts.indices { counts[i] += local.counts[i] }
                }
                sharded = KMeans.update(centroids: sharded, sums: sums, counts: counts, dimension: d)
            }
        }
        #expect(sharded == centroids)
    }
}
