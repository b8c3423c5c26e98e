// report.json of a curation run: the sizes at every stage (pool, unreadable images, copy groups and
// copies removed, evaluation overlaps removed, retrieved per curated image, collisions, cluster sizes)
// and the settings that produced them. Keys are sorted so two runs' reports compare line by line.

import Foundation

/// The summary of a curation run.
public struct CurationReport: Codable, Equatable, Sendable {
    public struct FeatureSet: Codable, Equatable, Sendable {
        public var features: String
        public var images: Int
        public var unreadable: Int
        public var dimension: Int
    }

    public struct Index: Codable, Equatable, Sendable {
        public var kind: String
        public var lists: Int?
        public var probes: Int?
    }

    public struct Dedup: Codable, Equatable, Sendable {
        /// The pool features the copy rule read (separate copy features, or the pool's).
        public var features: String
        public var copyThreshold: Float
        public var evaluationThreshold: Float
        public var neighbors: Int
        public var duplicateGroups: Int
        public var largestGroup: Int
        public var copiesRemoved: Int
        public var evaluationImagesMatched: Int
        public var evaluationOverlapsRemoved: Int
        public var poolAfter: Int
    }

    public struct Summary: Codable, Equatable, Sendable {
        public var min: Int
        public var median: Int
        public var max: Int

        init(_ values: [Int]) {
            let sorted = values.sorted()
            min = sorted.first ?? 0
            median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            max = sorted.last ?? 0
        }
    }

    public struct RetrievalSection: Codable, Equatable, Sendable {
        public var method: String
        public var perQuery: Int?
        public var clusters: Int?
        public var perCluster: Int?
        public var minimumQueries: Int?
        public var cap: Int?
        /// Pool images retrieved for each curated image, in the curated set's order.
        public var retrievedPerQuery: [Int]
        public var collisions: Int?
        public var distinctRetrieved: Int
        /// Cluster-based: sizes of all clusters (summary) and of the selected ones (in the order taken).
        public var clusterSizes: Summary?
        public var selectedClusterSizes: [Int]?
    }

    public var ranks: Int
    public var pool: FeatureSet
    public var queries: FeatureSet
    public var evaluation: FeatureSet?
    public var index: Index
    public var dedup: Dedup
    public var retrieval: RetrievalSection
    public var curatedImages: Int
    public var curatedList: String
    public var queriesIncluded: Bool

    init(pipeline p: CurationPipeline, dedup d: DeduplicationResult, retrieval r: RetrievalResult, index: IVFIndex?) {
        func set(_ file: FeatureFile) -> FeatureSet {
            FeatureSet(
                features: file.path, images: file.count, unreadable: file.unreadable.count, dimension: file.dimension)
        }
        let o = p.options
        ranks = p.worldSize
        pool = set(p.pool)
        queries = set(p.queries)
        evaluation = p.evaluation.map(set)
        self.index =
            index == nil
            ? Index(kind: "exact") : Index(kind: "ivf-flat", lists: index?.lists, probes: o.probes)
        dedup = Dedup(
            features: p.dedupPool.path, copyThreshold: o.copyThreshold, evaluationThreshold: o.evaluationThreshold,
            neighbors: o.neighbors,
            duplicateGroups: d.groups.count, largestGroup: d.groups.map(\.count).max() ?? 0,
            copiesRemoved: d.copies.count, evaluationImagesMatched: d.evaluationImagesMatched,
            evaluationOverlapsRemoved: d.evaluationOverlaps.count,
            poolAfter: p.pool.count - p.pool.unreadable.count - d.removed.count)
        if r.poolClusters.isEmpty {
            retrieval = RetrievalSection(
                method: "nearest", perQuery: o.perQuery, retrievedPerQuery: r.perQuery.map(\.count),
                collisions: r.collisions, distinctRetrieved: r.retrieved.count)
        } else {
            var sizes = [Int](repeating: 0, count: p.clusterCount)
            for cluster in r.poolClusters where cluster >= 0 { sizes[cluster] += 1 }
            retrieval = RetrievalSection(
                method: "clusters", clusters: p.clusterCount, perCluster: o.perCluster,
                minimumQueries: o.minimumQueries,
                cap: o.cap, retrievedPerQuery: r.perQuery.map(\.count), distinctRetrieved: r.retrieved.count,
                clusterSizes: Summary(sizes), selectedClusterSizes: r.selectedClusters.map { sizes[$0] })
        }
        let included = o.includeQueries ? p.queries.count - p.queries.unreadable.count : 0
        curatedImages = r.retrieved.count + included
        curatedList = p.listFile
        queriesIncluded = o.includeQueries
    }

    /// Pretty JSON, snake_case keys, sorted.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try encoder.encode(self)
    }
}
