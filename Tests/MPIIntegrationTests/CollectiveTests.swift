// Every collective under real mpirun at 1, 2, 3, 4 and 8 ranks (oversubscribed on small machines),
// checked by `dinov2-fsdp selftest collectives` against serially computed values; failure
// handling (one rank fails, the job ends instead of hanging); the comm benchmark's JSON.

import DinoTestSupport
import Foundation
import Testing

@Suite("MPI collectives", .serialized)
struct CollectiveTests {
    @Test("every collective matches the serial result", arguments: [1, 2, 3, 4, 8])
    func collectives(ranks: Int) throws {
        let result = try ProcessRunner.mpirun(ranks: ranks, ["selftest", "collectives"], timeout: 240)
        #expect(!result.timedOut)
        #expect(result.status == 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        #expect(result.stdout.contains("collectives on \(ranks) rank(s):"))
        #expect(result.stdout.contains(" 0 failed"))
        #expect(!result.stdout.contains("FAILED"))
    }

    @Test("the single-process communicator passes the same checks without mpirun")
    func singleProcess() throws {
        let result = try ProcessRunner.dinov2(["selftest", "collectives"], timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("collectives on 1 rank(s):"))
        #expect(result.stdout.contains(" 0 failed"))
    }

    @Test("a failure on one rank ends the whole job with an error naming the rank", arguments: [2, 4])
    func failingRankAbortsJob(ranks: Int) throws {
        let failing = ranks - 1
        let result = try ProcessRunner.mpirun(
            ranks: ranks, ["selftest", "abort", "--failing-rank", String(failing)],
            timeout: 120)
        #expect(!result.timedOut, "the surviving ranks hung in their barrier")
        #expect(result.status != 0)
        #expect(result.stderr.contains("[rank \(failing)] error: deliberate failure"))
        #expect(!result.stdout.contains("barrier completed"))
    }

    @Test("bench comm writes bandwidths for every collective and size")
    func benchComm() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = folder.appendingPathComponent("comm.json")
        let result = try ProcessRunner.mpirun(
            ranks: 4,
            ["bench", "comm", "--max-bytes", "262144", "--max-iterations", "5", "--json", json.path], timeout: 180)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let data = try Data(contentsOf: json)
        let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(report["world_size"] as? Int == 4)
        let records = try #require(report["records"] as? [[String: Any]])
        let sizes = [4096, 16384, 65536, 262144]
        #expect(records.count == 3 * sizes.count)
        for collective in ["allgather", "reducescatter", "allreduce"] {
            let mine = records.filter { $0["collective"] as? String == collective }
            #expect(mine.compactMap { $0["bytes"] as? Int } == sizes)
            for record in mine {
                let busbw = try #require(record["busbw_gbps"] as? Double)
                let algbw = try #require(record["algbw_gbps"] as? Double)
                #expect(busbw > 0 && algbw > 0 && busbw.isFinite)
                let factor = collective == "allreduce" ? 1.5 : 0.75
                #expect(abs(busbw - algbw * factor) <= 1e-9 * algbw)
            }
        }
    }
}
