import Foundation
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore
import WoodpeckerMetadata
import WoodpeckerStorage

/// LogStore nodes registered in a real etcd under leases, and a writer that places segments on live nodes only.
@Suite(.serialized, .enabled(if: WALEtcdServer.enabled, WALEtcdServer.skipReason))
struct QuorumDiscoveryTests {
    @Test func writersUseRegisteredNodesAndLeaveADeadOneBehind() async throws {
        try await withEtcdWAL { env in
            // Four nodes, each registered under its own lease (as `woodpecker logstore --metadata` does).
            var loops: [EventLoop] = []
            var nodes: [LogStoreNode] = []
            var registrations: [LogStoreRegistration] = []
            for i in 0..<4 {
                let loop = EventLoop(name: "ls-\(i)")
                loops.append(loop)
                let node = LogStoreNode(loop: loop, store: LocalFileStore(root: env.dir + "/objects", loop: loop),
                                        dataDirectory: env.dir + "/ls-\(i)")
                try await node.start(host: "127.0.0.1", port: 0)
                nodes.append(node)
                registrations.append(try await LogStoreRegistration.start(
                    metadata: env.store(), metadataRoot: env.prefix + "woodpecker",
                    address: "127.0.0.1:\(await node.port)", ttlSeconds: 2, loop: env.loop))
            }
            let addresses = registrations.map(\.address)
            var settings = QuorumSettings(nodes: []) { loop, address in
                LogStoreClient(loop: loop, address: address, requestTimeoutMs: 3_000)
            }
            settings.discoverFromMetadata = true
            settings.discoveryIntervalMs = 100
            settings.probeIntervalMs = 50
            var config = WALConfig.test
            config.writerLeaseTTLSeconds = 0
            let client = try WoodpeckerClient(loop: env.loop, store: LocalFileStore(root: env.dir + "/objects", loop: env.loop),
                                              metadata: env.store(), config: config,
                                              metadataRoot: env.prefix + "woodpecker", quorum: settings)
            try await client.startLogStoreDiscovery()
            let log = try await client.createLog("disc")
            let w = try await log.openWriter()
            var payloads: [String] = []
            for i in 0..<20 {
                _ = try await w.append(bytes("d\(i)"))
                payloads.append("d\(i)")
            }
            let first = try #require(try await log.segmentMetas().last?.value)
            let ensemble = try #require(first.quorum)
            #expect(ensemble.count == 3 && Set(ensemble).isSubset(of: Set(addresses)))
            // A node of the ensemble dies: its registration goes with its lease.
            let victim = try #require(addresses.firstIndex(of: ensemble[0]))
            await nodes[victim].stop()
            await registrations[victim].stop()
            var i = 20
            let rolled = try await eventually(env.loop, timeoutMs: 10_000) {
                _ = try await w.append(bytes("d\(i)"))
                payloads.append("d\(i)")
                i += 1
                return await w.currentSegmentId != first.segmentId
            }
            #expect(rolled, "the writer did not move off the dead node")
            let second = try #require(try await log.segmentMetas().last?.value.quorum)
            #expect(!second.contains(addresses[victim]) && second.count == 3, "\(second)")
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == payloads)
            await client.closeNodes()
            for (k, r) in registrations.enumerated() where k != victim { await r.stop() }
            for (k, n) in nodes.enumerated() where k != victim { await n.stop() }
            for l in loops { l.shutdown() }
        }
    }
}
