// The sharded exact search against a float64 brute force, and its rank-count invariance: the pool cut
// into 1, 2, 3 and 4 shards (whole blocks, ExactSearch.shard) and the shards' candidates merged give
// the 1-shard answer bit for bit; copy groups from the union-find against a direct graph search.
// Tolerance of the brute-force comparison: a float32 dot product of 48 unit-vector terms is within
// ~1e-6 of float64, so neighbours whose float64 similarities are 1e-5 apart must come out in order.

import DinoCore
import DinoCuration
import DinoTestSupport
import Testing

@Suite("curation: exact search over a sharded pool, copy groups")
struct ExactSearchTests {
    /// `count` random unit vectors of `d` dims, with every 7th a near-copy of the one before (ties and
    /// close pairs, as a pool with duplicates has).
    static func unitVectors(_ count: Int, _ d: Int, seed: UInt64) -> [Float] {
        var random = TestRandom(seed: seed)
        var x = random.normals(count * d)
        for i in stride(from: 7, to: count, by: 7) {
            for c in 0..<d { x[i * d + c] = x[(i - 1) * d + c] + 0.01 * x[i * d + c] }
        }
        for i in 0..<count {
            let norm = (0..<d).reduce(0.0) { $0 + x[i * d + $1] * x[i * d + $1] }.squareRoot()
            for c in 0..<d { x[i * d + c] /= norm }
        }
        return x.map { Float($0) }
    }

    @Test("the k best of 9000 pool rows for 40 queries, as a float64 brute force ranks them")
    func bruteForce() {
        let n = 9000, d = 48, q = 40, k = 6
        let pool = Self.unitVectors(n, d, seed: 1)
        // Queries: 20 pool rows themselves (their own index must come first) and 20 fresh vectors.
        let fresh = Self.unitVectors(20, d, seed: 2)
        let queries = (0..<20).flatMap { Array(pool[($0 * 431) * d..<($0 * 431 + 1) * d]) } + fresh
        let found = queries.withUnsafeBufferPointer { qp in
            pool.withUnsafeBufferPointer { pp in
                ExactSearch.localCandidates(
                    queries: qp.baseAddress!, queryCount: q, dimension: d, pool: pp.baseAddress!, rows: 0..<n, k: k)
            }
        }
        for i in 0..<q {
            var exact = (0..<n).map { j in
                (j, (0..<d).reduce(0.0) { $0 + Double(queries[i * d + $1]) * Double(pool[j * d + $1]) })
            }
            exact.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
            #expect(found[i].count == k)
            if i < 20 { #expect(found[i].first?.index == i * 431, "query \(i) is pool row \(i * 431)") }
            for (slot, neighbor) in found[i].enumerated() {
                #expect(abs(Double(neighbor.similarity) - exact[slot].1) <= 1e-5, "query \(i) slot \(slot)")
                // The index must be the exact one unless another row's similarity is within rounding.
                if neighbor.index != exact[slot].0 {
                    let theirs = exact.first { $0.0 == neighbor.index }?.1 ?? -2
                    #expect(abs(theirs - exact[slot].1) <= 1e-5, "query \(i) slot \(slot): \(neighbor.index)")
                }
            }
        }
    }

    @Test("1, 2, 3 and 4 shards merged give the 1-shard neighbours bit for bit", arguments: [2, 3, 4])
    func shardsAgree(shards: Int) {
        let d = 32, q = 25, k = 5
        // 5 blocks and a partial one: shards of whole blocks, one of them holding the tail.
        let n = 5 * ExactSearch.blockRows + 123
        let pool = Self.unitVectors(n, d, seed: 3)
        let queries = Self.unitVectors(q, d, seed: 4)
        func candidates(_ rows: Range<Int>) -> [[Neighbor]] {
            queries.withUnsafeBufferPointer { qp in
                pool.withUnsafeBufferPointer { pp in
                    ExactSearch.localCandidates(
                        queries: qp.baseAddress!, queryCount: q, dimension: d,
                        pool: pp.baseAddress! + rows.lowerBound * d,
                        rows: rows, k: k)
                }
            }
        }
        let whole = candidates(0..<n)
        let ranges = (0..<shards).map { ExactSearch.shard(poolSize: n, rank: $0, worldSize: shards) }
        #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == n)
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        let merged = ExactSearch.merge(ranges.map(candidates), k: k)
        #expect(merged == whole)
        // Through the collective path on one rank as well.
        let searched = queries.withUnsafeBufferPointer { qp in
            pool.withUnsafeBufferPointer { pp in
                try? ExactSearch.search(
                    queries: qp.baseAddress!, queryCount: q, dimension: d, pool: pp.baseAddress!, rows: 0..<n, k: k,
                    communicator: SingleProcessCommunicator())
            }
        }
        #expect(searched == whole)
    }

    @Test("copy groups: union-find components equal a graph search; the smallest index of each is kept")
    func groups() {
        var random = TestRandom(seed: 9)
        let count = 300
        let edges = (0..<220).map { _ in (Int(random.next() % UInt64(count)), Int(random.next() % UInt64(count))) }
        var forest = DuplicateGroups(count: count)
        for (a, b) in edges { forest.union(a, b) }
        // Reference: breadth-first search over the same edges.
        var adjacent = [[Int]](repeating: [], count: count)
        for (a, b) in edges {
            adjacent[a].append(b)
            adjacent[b].append(a)
        }
        var seen = [Bool](repeating: false, count: count)
        var components: [[Int]] = []
        for start in 0..<count where !seen[start] {
            var queue = [start], members: [Int] = []
            seen[start] = true
            while let node = queue.popLast() {
                members.append(node)
                for next in adjacent[node] where !seen[next] {
                    seen[next] = true
                    queue.append(next)
                }
            }
            components.append(members.sorted())
        }
        #expect(forest.groups() == components.filter { $0.count > 1 }.sorted { $0[0] < $1[0] })
        #expect(forest.representatives() == components.map { $0[0] }.sorted())
    }
}
