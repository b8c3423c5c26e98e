// Copy detection on pixels, end to end: a small model trained on 2 ranks with the copy-detection loss
// (Configs/tests/copy-detection.yaml: the recipe of Configs/copy-detection.yaml, smaller), then
// `curate` embeds a planted pool (PlantedCopies: validation images of the embedded dataset, none seen
// in training, with exact copies, JPEG re-encodings, 85 %-area crops and colour shifts of some of them)
// and its copy rule, at the default threshold, must find the planted pairs with recall and precision
// >= 0.95 (issue #19's bar), exact copies and re-encodings among them.

import DinoCuration
import DinoTestSupport
import Foundation
import Testing

@Suite("copy detection on images")
struct CopyDetectionTests {
    @Test("a model trained with the copy loss: curate finds planted copies (recall, precision >= 0.95)")
    func plantedCopiesFound() throws {
        let root = try TestPaths.temporaryDirectory().path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let run = root + "/run"
        let train = try ProcessRunner.mpirun(
            ranks: 2, ["train", "--config", "Configs/tests/copy-detection.yaml", "--output", run], timeout: 900)
        #expect(train.status == 0, "\(train.stdout)\n\(train.stderr)")
        let truth = try PlantedCopies.write(to: root + "/pool", perClass: 25, every: 5, size: 64)
        let curate = try ProcessRunner.mpirun(
            ranks: 2,
            [
                "curate", "--pool", truth.listFile, "--queries", truth.listFile, "--checkpoint", run, "--output",
                root + "/curated", "--retrieval", "nearest", "--per-query", "1",
            ], timeout: 300)
        #expect(curate.status == 0, "\(curate.stdout)\n\(curate.stderr)")
        let dedup = try JSONDecoder().decode(
            GroupsProbe.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/curated/dedup.json")))
        let found = Set(
            dedup.result.groups.flatMap { group in
                group.indices.flatMap { i in
                    group[(i + 1)...].map { [group[i], $0] }
                }
            })
        let planted = Set(truth.copyGroups)
        let hits = Double(found.intersection(planted).count)
        let recall = hits / Double(planted.count), precision = found.isEmpty ? 1 : hits / Double(found.count)
        #expect(recall >= 0.95 && precision >= 0.95, "recall \(recall), precision \(precision) of \(found.count) pairs")
        for kind in [PlantedCopies.Kind.exact, .jpeg] {
            #expect(truth.copies.filter { $0.kind == kind }.allSatisfy { found.contains([$0.source, $0.copy]) })
        }
    }
}
