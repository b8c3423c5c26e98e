// The TensorBoard event encoder's checksum and tags (the whole file is read back by TensorBoard itself
// in MPIIntegrationTests/ObservabilityTests).

import DinoTraining
import Testing

@Suite("TensorBoard events")
struct TensorBoardEventsTests {
    @Test("CRC-32C of the standard check string, and of 32 zero bytes (RFC 3720 B.4)")
    func checksum() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    }

    @Test("every field of a record becomes a tag; arrays one tag a rank; evaluation fields under knn/")
    func tags() {
        var training = MetricsRecord(iteration: 3)
        (training.loss, training.lr, training.maxRSSBytes) = (2.5, 1e-4, 1000)
        training.maxRSSBytesByRank = [900, 1000]
        let tags = TensorBoardWriter.scalars(of: training).map(\.tag)
        #expect(
            tags == [
                "loss/loss", "schedule/lr", "memory/max_rss_bytes", "memory/max_rss_bytes_by_rank/rank_0",
                "memory/max_rss_bytes_by_rank/rank_1",
            ], "\(tags)")
        var evaluation = MetricsRecord(iteration: 4)
        (evaluation.knnTop1, evaluation.elapsedSeconds) = (40, 12)
        #expect(TensorBoardWriter.scalars(of: evaluation).map(\.tag) == ["knn/elapsed_seconds", "knn/knn_top1"])
    }
}
