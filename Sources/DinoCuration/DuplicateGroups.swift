// Copy-detection groups (DINOv2 appendix A.3): the pool's near-duplicate pairs (cosine similarity above
// a threshold among each image's nearest neighbours) are the edges of a graph; its connected components
// are the groups of copies, found with a disjoint-set forest (union by size, path halving), and one
// image per group is kept: the smallest pool index, so the choice does not depend on the order in which
// pairs were found.

/// Connected components of a graph on `count` nodes.
public struct DuplicateGroups: Sendable {
    private var parent: [Int]
    private var size: [Int]

    public init(count: Int) {
        parent = Array(0..<count)
        size = [Int](repeating: 1, count: count)
    }

    /// The component's root of `node`.
    public mutating func root(_ node: Int) -> Int {
        var x = node
        while parent[x] != x {
            parent[x] = parent[parent[x]]
            x = parent[x]
        }
        return x
    }

    /// Joins the components of `a` and `b`.
    public mutating func union(_ a: Int, _ b: Int) {
        var (ra, rb) = (root(a), root(b))
        guard ra != rb else { return }
        if size[ra] < size[rb] { swap(&ra, &rb) }
        parent[rb] = ra
        size[ra] += size[rb]
    }

    /// Every component of more than one node, each sorted, ordered by its smallest node.
    public mutating func groups() -> [[Int]] {
        var members: [Int: [Int]] = [:]
        for node in parent.indices { members[root(node), default: []].append(node) }
        return members.values.filter { $0.count > 1 }.sorted { $0[0] < $1[0] }
    }

    /// The nodes kept when each component keeps its smallest node: every node whose component's
    /// smallest node is itself, ascending.
    public mutating func representatives() -> [Int] {
        var smallest: [Int: Int] = [:]
        for node in parent.indices {
            let r = root(node)
            smallest[r] = Swift.min(smallest[r] ?? node, node)
        }
        return parent.indices.filter { smallest[root($0)] == $0 }
    }
}
