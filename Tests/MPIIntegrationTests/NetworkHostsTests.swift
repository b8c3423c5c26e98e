// Ranks on several hosts over TCP, on one machine: network namespaces joined by a bridge act as hosts
// (Launch/netns/hosts.sh; only 10.213.0.x addresses inside them), Open MPI starts ranks in them
// through an rsh agent (Launch/netns/agent.sh) with the TCP transport only, and each host has its own
// host name, so MPI's node-local groups are the hosts. The collectives self-test passes across 2 hosts
// x 2 ranks, and a HYBRID_SHARD run grouped by host gives the losses of 4 ranks on shared memory with
// groups of 2, bit for bit. Needs root.

import DinoTestSupport
import Foundation
import Testing

@Suite("several hosts over TCP (network namespaces)", .serialized)
struct NetworkHostsTests {
    static let prefix = "dinot"

    func script(_ name: String, _ arguments: [String], timeout: Double = 240) throws -> ProcessResult {
        try ProcessRunner.run(
            URL(fileURLWithPath: "/bin/bash"), ["Launch/netns/\(name)"] + arguments,
            environment: ["DINO_NETNS_PREFIX": Self.prefix], timeout: timeout)
    }

    func losses(_ folder: String) throws -> [[Double]] {
        try TrainingRuns.records(folder).map { record in
            ["loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss"].map {
                record[$0] as? Double ?? .nan
            }
        }
    }

    @Test("2 hosts x 2 ranks over TCP: collectives pass; HYBRID_SHARD by host equals shared memory bit for bit")
    func twoHosts() throws {
        try #require(getuid() == 0, "network namespaces need root")
        let up = try script("hosts.sh", ["up", "2", Self.prefix])
        try #require(up.status == 0, "\(up.stdout)\n\(up.stderr)")
        defer { _ = try? script("hosts.sh", ["down", Self.prefix]) }
        // The agent starts nothing outside the namespaces.
        let elsewhere = try script("agent.sh", ["192.0.2.1", "true"])
        #expect(elsewhere.status != 0 && elsewhere.stderr.contains("is not a namespace host"))

        let selftest = try script("mpirun.sh", ["2", "2", TestPaths.executable.path, "selftest", "collectives"])
        #expect(
            selftest.status == 0 && selftest.stdout.contains("on 4 rank(s)"), "\(selftest.stdout)\n\(selftest.stderr)")

        let root = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try TrainingRuns.synthesize(into: root.path)
        let common = [
            "train", "--config", "Configs/tests/tiny.yaml", "--data", root.path + "/train",
            "fsdp.sharding_strategy=HYBRID_SHARD",
        ]
        let tcp = try script(
            "mpirun.sh", ["2", "2", TestPaths.executable.path] + common + ["--output", root.path + "/tcp"])
        try #require(tcp.status == 0, "\(tcp.stdout)\n\(tcp.stderr)")
        #expect(tcp.stdout.contains("2 rank(s) on this node"), "the hosts should be the nodes: \(tcp.stdout)")
        let shm = try ProcessRunner.mpirun(
            ranks: 4, common + ["--output", root.path + "/shm", "fsdp.hybrid_group_size=2"], timeout: 240)
        try #require(shm.status == 0, "\(shm.stderr)")
        #expect(shm.stdout.contains("4 rank(s) on this node"))
        let a = try losses(root.path + "/tcp"), b = try losses(root.path + "/shm")
        #expect(a.count == 8 && a == b, "\(a)\n\(b)")
    }
}
