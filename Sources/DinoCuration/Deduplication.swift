// The deduplication stage (DINOv2 appendix A.3): every pool image's k nearest pool images (k = 64) with
// a similarity above the copy threshold are its copies; the connected components of that graph are the
// copy groups and each keeps one image (its smallest pool row). Then relative deduplication: every
// evaluation image's nearest pool images above the evaluation threshold (lower, so more pairs count) are
// near-duplicates of it, and the whole copy group of each such pool image is removed. Every rank builds
// the same groups from the same merged neighbour lists.

import DinoCore

/// What deduplication removes from the pool.
public struct DeduplicationResult: Codable, Equatable, Sendable {
    /// Copy groups of more than one image, each sorted, ordered by their first row (before the evaluation
    /// overlaps are removed).
    public var groups: [[Int]]
    /// Rows removed as copies of the row their group keeps.
    public var copies: [Int]
    /// Rows removed because they, or a copy of them, are near-duplicates of an evaluation image.
    public var evaluationOverlaps: [Int]
    /// Evaluation images with at least one near-duplicate in the pool.
    public var evaluationImagesMatched: Int

    /// Every removed row, ascending.
    public var removed: [Int] { (copies + evaluationOverlaps).sorted() }
}

/// The copy-detection rule.
public enum Deduplication {
    /// Neighbours per image whose similarities are tested (the paper's 64).
    public static let defaultNeighbors = 64

    /// Copy groups of the pool and near-duplicates of `evaluation`'s images (nil: none); collective.
    public static func run(
        search: PoolSearch, pool: some PoolSource, evaluation: (any PoolSource)?, neighbors k: Int,
        copyThreshold: Float, evaluationThreshold: Float, communicator comm: any Communicator
    ) throws -> DeduplicationResult {
        var graph = DuplicateGroups(count: pool.count)
        try search.searchAll(of: pool, k: Swift.min(k + 1, pool.count), communicator: comm) { first, answers in
            for (offset, neighbors) in answers.enumerated() {
                for neighbor in neighbors where neighbor.index != first + offset && neighbor.similarity > copyThreshold
                {
                    graph.union(first + offset, neighbor.index)
                }
            }
        }
        let groups = graph.groups()
        var linked = Set<Int>(), matched = 0
        if let evaluation {
            try search.searchAll(of: evaluation, k: Swift.min(k, pool.count), communicator: comm) { _, answers in
                for neighbors in answers {
                    let near = neighbors.filter { $0.similarity > evaluationThreshold }
                    if !near.isEmpty { matched += 1 }
                    for neighbor in near { linked.insert(graph.root(neighbor.index)) }
                }
            }
        }
        var copies: [Int] = [], overlaps: [Int] = []
        let kept = Set(graph.representatives())
        for row in 0..<pool.count {
            if linked.contains(graph.root(row)) {
                overlaps.append(row)
            } else if !kept.contains(row) {
                copies.append(row)
            }
        }
        return DeduplicationResult(
            groups: groups, copies: copies, evaluationOverlaps: overlaps, evaluationImagesMatched: matched)
    }
}
