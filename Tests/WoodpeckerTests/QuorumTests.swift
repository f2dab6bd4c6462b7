import Foundation
import Testing
@testable import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore
import WoodpeckerMetadata
import WoodpeckerStorage

/// Three real LogStore nodes (each on its own loop, real TCP on loopback, each with a data directory) in front of
/// the WAL test environment's object store directory. Nodes can be stopped and restarted on the same port.
final class QuorumCluster: @unchecked Sendable {
    let env: WALEnv
    let loops: [EventLoop]
    private(set) var nodes: [LogStoreNode?]
    private(set) var ports: [Int]
    /// Each node's object store (counting its lookups; delaying its puts when asked).
    private(set) var stores: [FaultStore?]

    init(env: WALEnv, count: Int = 3) {
        self.env = env
        loops = (0..<count).map { EventLoop(name: "logstore-\($0)") }
        nodes = Array(repeating: nil, count: count)
        ports = Array(repeating: 0, count: count)
        stores = Array(repeating: nil, count: count)
    }

    var addresses: [String] { ports.map { "127.0.0.1:\($0)" } }

    func startAll() async throws {
        for i in 0..<loops.count { try await start(i) }
    }

    /// Starts node `i` on its data directory (its state from before a stop is reloaded from there), or with
    /// none (it then starts empty).
    func start(_ i: Int, dataDirectory: Bool = true, options: LogStoreNodeOptions = LogStoreNodeOptions(),
               uploadDelayMs: UInt64 = 0) async throws {
        let loop = loops[i]
        let files = LocalFileStore(root: env.dir + "/objects", loop: loop)
        let store = FaultStore(files, loop: loop)
        if uploadDelayMs > 0 { store.setFaults { $0.putDelayMs = { _ in uploadDelayMs } } }
        stores[i] = store
        let node = LogStoreNode(loop: loop, store: store,
                                dataDirectory: dataDirectory ? env.dir + "/logstore-\(i)" : nil, options: options)
        try await node.start(host: "127.0.0.1", port: ports[i])
        ports[i] = await node.port
        nodes[i] = node
    }

    func stop(_ i: Int) async {
        await nodes[i]?.stop()
        nodes[i] = nil
    }

    func settings(_ change: (inout QuorumSettings) -> Void = { _ in }) -> QuorumSettings {
        var s = QuorumSettings(nodes: addresses) { loop, address in
            LogStoreClient(loop: loop, address: address, requestTimeoutMs: 3_000)
        }
        s.probeIntervalMs = 50
        change(&s)
        return s
    }

    func client(_ config: WALConfig = .test, _ change: (inout QuorumSettings) -> Void = { _ in }) throws -> WoodpeckerClient {
        try WoodpeckerClient(loop: env.loop, store: env.store, metadata: env.metadata, config: config,
                             quorum: settings(change))
    }

    func status(_ i: Int, _ ref: SegmentRef) async throws -> SegmentStatus {
        let c = LogStoreClient(loop: env.loop, address: addresses[i], requestTimeoutMs: 3_000)
        defer { Task { await c.close() } }
        return try await c.status(ref)
    }

    func shutdown() async {
        for i in 0..<nodes.count { await stop(i) }
        for l in loops { l.shutdown() }
    }
}

/// Runs `body` with a `.file` WAL environment and a started three-node cluster, and tears both down.
func withQuorum(_ body: @escaping @Sendable (WALEnv, QuorumCluster) async throws -> Void) async throws {
    try await withWAL(.file) { env in
        let cluster = QuorumCluster(env: env)
        do {
            try await cluster.startAll()
            try await body(env, cluster)
        } catch {
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }
}

/// The highest block a node has (held, or known uploaded): what Woodpecker's recovery takes the minimum of.
func lastBlock(_ s: SegmentStatus) -> Int32 { max(s.blocks.last?.blockNumber ?? -1, s.uploadedThrough) }

@Suite(.serialized) struct QuorumTests {
    @Test func appendsAreAcknowledgedByTheQuorumAndLandInObjectStorage() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            let ids = try await withThrowingTaskGroup(of: (Int, LogMessageId).self) { g in
                for i in 0..<300 {
                    g.addTask(executorPreference: env.loop) { (i, try await w.append(bytes("e\(i)"))) }
                }
                var out: [Int: LogMessageId] = [:]
                for try await (i, id) in g { out[i] = id }
                return out
            }
            #expect(ids.count == 300)
            let meta = try #require(try await log.segmentMetas().first)
            #expect(Set(meta.value.quorum ?? []) == Set(cluster.addresses))
            // One node (the segment's uploader) uploads confirmed blocks while the segment is active; the writer
            // passes its durable point on, and every node drops its copies before the segment completes.
            let ref = SegmentRef(objectPrefix: "", logId: log.logId, segmentId: meta.value.segmentId)
            let drained = try await eventually(env.loop) {
                for i in 0..<3 where try await cluster.status(i, ref).blocks.count > 0 { return false }
                return true
            }
            #expect(drained, "nodes still hold blocks the uploader made durable")
            #expect(try await env.store.head(ref.blockKey(0)) != nil)
            try await w.close()
            let got = try await readAll(log)
            #expect(got.count == 300)
            expectDenseOrder(got)
            #expect(Set(got.map { text($0.payload) }) == Set((0..<300).map { "e\($0)" }))
            // After completion every node finds the blocks in object storage and drops its copies.
            let empty = await eventually(env.loop) {
                for i in 0..<3 where await cluster.nodes[i]!.bufferedBytes > 0 { return false }
                return true
            }
            #expect(empty, "nodes still hold blocks of a completed segment")
            await client.closeNodes()
        }
    }

    /// LogStores upload runs (several blocks per object). Every read path finds blocks inside runs: the writer's
    /// own reader without a tail cache (the writer's block list, located by listing), another client reading the
    /// active segment (following the chain), and readers of the completed segment (the footer's list).
    @Test func everyReaderFindsBlocksInsideRuns() async throws {
        try await withQuorum { env, cluster in
            let client1 = try cluster.client(.test.with { $0.tailCacheBytes = 0 })
            let log1 = try await client1.createLog("q")
            let w = try await log1.openWriter()
            let count = 400
            try await withThrowingTaskGroup(of: Void.self) { g in
                for i in 0..<count {
                    g.addTask(executorPreference: env.loop) { _ = try await w.append(bytes("r\(i)")) }
                }
                for try await _ in g {}
            }
            let meta = try #require(try await log1.segmentMetas().first)
            let ref = SegmentRef(objectPrefix: "", logId: log1.logId, segmentId: meta.value.segmentId)
            let blocks = await log1.activeBlocks.count
            let uploaded = try await eventually(env.loop) { try await chainLength(env.store, ref).blocks == blocks }
            #expect(uploaded)
            let objects = try await chainLength(env.store, ref).objects
            #expect(objects < blocks, "\(objects) objects for \(blocks) blocks: no runs formed")
            func check(_ got: [LogEntry], _ who: String) {
                #expect(got.count == count, "\(who) read \(got.count) of \(count)")
                expectDenseOrder(got)
                #expect(Set(got.map { text($0.payload) }) == Set((0..<count).map { "r\($0)" }), "\(who)")
            }
            check(try await readAll(log1), "the writer's client")
            let client2 = try cluster.client()
            check(try await readAll(try await client2.openLog("q")), "another client, active segment")
            try await w.close()
            let client3 = try cluster.client()
            check(try await readAll(try await client3.openLog("q")), "another client, completed segment")
            check(try await readAll(log1), "the writer's client, completed segment")
            await client1.closeNodes()
            await client2.closeNodes()
            await client3.closeNodes()
        }
    }

    /// The uploader's durable point reaches the other nodes through the writer, so they drop their copies without
    /// a lookup per block (on S3 each lookup is a billed request), and the uploader puts without looking first.
    /// Before, every node looked up every block.
    @Test func standbysDropWhatTheUploaderReportsWithoutLookingItUp() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            let blocks = 120
            for i in 0..<blocks { _ = try await w.append(bytes("e\(i)")) }
            let meta = try #require(try await log.segmentMetas().first)
            let ref = SegmentRef(objectPrefix: "", logId: log.logId, segmentId: meta.value.segmentId)
            let drained = await eventually(env.loop) {
                for i in 0..<3 where await cluster.nodes[i]!.bufferedBytes > 0 { return false }
                return true
            }
            #expect(drained, "nodes still hold blocks while the writer is open")
            // Every block is on the chain of run objects, in fewer objects than blocks.
            let (chained, objects) = try await chainLength(env.store, ref)
            #expect(chained == blocks)
            #expect(objects < blocks, "\(objects) objects for \(blocks) blocks")
            var standbyLookups = 0
            var uploaderLookups = 0
            var reported: Int64 = 0
            for i in 0..<3 {
                let puts = cluster.stores[i]!.putCount
                if puts == 0 {
                    standbyLookups += cluster.stores[i]!.lookupCount
                    reported += await cluster.nodes[i]!.reportedDurableBlocks
                } else {
                    uploaderLookups += cluster.stores[i]!.lookupCount
                }
            }
            // The uploader puts each block without looking for it first.
            #expect(uploaderLookups == 0, "the uploader made \(uploaderLookups) lookups for \(blocks) blocks")
            #expect(cluster.stores.compactMap { $0?.putCount }.filter { $0 > 0 }.count == 1, "one uploader per segment")
            // Appends wait for each other here, so the uploader keeps up and at most a few blocks are looked up.
            #expect(standbyLookups <= blocks / 4, "standby nodes made \(standbyLookups) lookups for \(blocks) blocks")
            #expect(reported >= Int64(blocks), "standbys marked only \(reported) blocks durable on the uploader's report")
            try await w.close()
            #expect(try await readAll(log).count == blocks)
            await client.closeNodes()
        }
    }

    @Test func oneNodeDownKeepsAppendsGoingAndTheWriterRollsWhenItIsBack() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            var acked: [LogMessageId] = []
            for i in 0..<20 { acked.append(try await w.append(bytes("a\(i)"))) }
            await cluster.stop(2)
            for i in 20..<60 { acked.append(try await w.append(bytes("a\(i)"))) }
            let first = try #require(await w.currentSegmentId)
            try await cluster.start(2)
            // Once the node answers again the writer completes the degraded segment and opens one on all three.
            var i = 60
            let rolled = try await eventually(env.loop, timeoutMs: 10_000) {
                acked.append(try await w.append(bytes("a\(i)")))
                i += 1
                return await w.currentSegmentId != first
            }
            #expect(rolled)
            let metas = try await log.segmentMetas()
            #expect(metas.first?.value.state == .completed)
            #expect(Set(metas.last?.value.quorum ?? []) == Set(cluster.addresses))
            try await w.close()
            let got = try await readAll(log)
            #expect(got.map(\.id) == acked)
            #expect(got.map { text($0.payload) } == (0..<i).map { "a\($0)" })
            await client.closeNodes()
        }
    }

    /// A node that restarts empty between two appends, without any request failing, must not keep counting: it
    /// lost the blocks it acknowledged. The writer notices the new connection, drops it and rolls.
    @Test func aNodeRestartedWithoutItsDataIsDroppedFromTheSegment() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            for i in 0..<10 { _ = try await w.append(bytes("r\(i)")) }
            let first = try #require(await w.currentSegmentId)
            await cluster.stop(2)
            try await cluster.start(2, dataDirectory: false)
            var i = 10
            let rolled = try await eventually(env.loop, timeoutMs: 10_000) {
                _ = try await w.append(bytes("r\(i)"))
                i += 1
                return await w.currentSegmentId != first
            }
            #expect(rolled, "the writer kept counting a node that restarted without its data")
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == (0..<i).map { "r\($0)" })
            await client.closeNodes()
        }
    }

    /// Nodes that upload slower than the writer appends fill up and answer "buffer full": the writer waits for
    /// them (backpressure) instead of dropping them from the quorum and failing the appends.
    @Test func nodesAtTheirMemoryBoundSlowTheWriterDownInsteadOfFailingIt() async throws {
        try await withQuorum { env, cluster in
            var options = LogStoreNodeOptions()
            options.maxBufferedBytes = 64 * 1024
            for i in 0..<3 {
                await cluster.stop(i)
                try await cluster.start(i, options: options, uploadDelayMs: 20)
            }
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            let payload = String(repeating: "x", count: 4000)
            for i in 0..<100 { _ = try await w.append(bytes("\(i):\(payload)")) }  // 400 KB through 64 KB buffers
            try await w.close()
            #expect(try await readAll(log).count == 100)
            await client.closeNodes()
        }
    }

    @Test func twoNodesDownFailAppendsRetryablyAndNothingAcknowledgedIsLost() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("q")
            let w = try await log.openWriter()
            var acked: [String] = []
            for i in 0..<20 {
                _ = try await w.append(bytes("b\(i)"))
                acked.append("b\(i)")
            }
            await cluster.stop(1)
            await cluster.stop(2)
            var failures = 0
            for i in 20..<25 {
                do {
                    _ = try await w.append(bytes("b\(i)"))
                    acked.append("b\(i)")
                } catch let e as WoodpeckerError {
                    #expect(e.isRetryable, "\(e)")
                    failures += 1
                }
            }
            #expect(failures == 5)
            // The writer completed its segment but cannot open the next one yet: it must stay usable (retrying the
            // completion used to conflict with itself and fail the writer as fenced).
            #expect(await w.isWritable)
            try await cluster.start(1)
            try await cluster.start(2)
            var n = 25
            let back = try await eventually(env.loop, timeoutMs: 15_000) {
                do {
                    _ = try await w.append(bytes("b\(n)"))
                    acked.append("b\(n)")
                    n += 1
                    return true
                } catch let e as WoodpeckerError where e.isRetryable {
                    n += 1
                    return false
                }
            }
            #expect(back, "appends did not resume after the nodes returned")
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == acked)
            await client.closeNodes()
        }
    }

    /// A writer whose segment is completed but whose next segment cannot be created (too few nodes) used to keep
    /// `close` waiting for as long as the nodes stayed away: every failed roll started another one.
    @Test func closeReturnsWhileTheNextSegmentCannotBeCreated() async throws {
        try await withQuorum { env, cluster in
            let client = try cluster.client()
            let log = try await client.createLog("closing")
            let w = try await log.openWriter()
            var acked: [String] = []
            for i in 0..<10 {
                _ = try await w.append(bytes("c\(i)"))
                acked.append("c\(i)")
            }
            await cluster.stop(1)
            await cluster.stop(2)
            await #expect(throws: WoodpeckerError.self) { _ = try await w.append(bytes("lost")) }
            let closed = Recorder<Bool>()
            Task(executorPreference: env.loop) {
                do {
                    try await w.close()
                    closed.add(true)
                } catch {
                    closed.add(false)
                }
            }
            #expect(await eventually(env.loop, timeoutMs: 10_000) { closed.count == 1 }, "close did not return")
            try await cluster.start(1)
            try await cluster.start(2)
            #expect(try await readAll(log).map { text($0.payload) } == acked)
            await client.closeNodes()
        }
    }

    /// The case Woodpecker's "minimum of two replies" rule gets wrong: the last acknowledged block is held by one
    /// responder and by a node that is down during recovery; the other responder lacks it.
    @Test func recoveryKeepsABlockHeldOnlyByOneResponderAndADownNode() async throws {
        try await withQuorum { env, cluster in
            // The writer never pushes its confirmed point on its own: the last block is never uploaded by a node.
            let client1 = try cluster.client { $0.confirmPushDelayMs = 600_000 }
            let log1 = try await client1.createLog("q")
            let w1 = try await log1.openWriter()
            for i in 0..<5 { _ = try await w1.append(bytes("c\(i)")) }
            // A block is acknowledged by the first two replies: wait until B holds block 4 too.
            let segment0 = SegmentRef(objectPrefix: "", logId: log1.logId, segmentId: try #require(await w1.currentSegmentId))
            let bHasAll = try await eventually(env.loop) { lastBlock(try await cluster.status(1, segment0)) == 4 }
            #expect(bHasAll)
            await cluster.stop(1)                              // B misses block 5
            let last = try await w1.append(bytes("c5"))        // acknowledged by A and C
            #expect(last.entryId == 5)
            // The writer process dies (nothing closed); C goes down; B comes back with what it held.
            let segment = try #require(await w1.currentSegmentId)
            await client1.closeNodes()
            await cluster.stop(2)
            try await cluster.start(1)
            let ref = SegmentRef(objectPrefix: "", logId: log1.logId, segmentId: segment)
            let a = try await cluster.status(0, ref)
            let b = try await cluster.status(1, ref)
            #expect(a.known && b.known)
            #expect(lastBlock(a) == 5 && lastBlock(b) == 4, "the case needs A at block 5 and B at 4: \(a) \(b)", sourceLocation: #_sourceLocation)
            #expect(try await chainLength(env.store, ref).blocks <= 5, "block 5 must not be in object storage yet")
            try await env.restart()
            let client2 = try cluster.client()
            let log2 = try await client2.openLog("q")
            let w2 = try await log2.openWriter()   // fences A and B (C is down), recovers, completes the segment
            let got = try await readAll(log2)
            #expect(got.map { text($0.payload) } == (0..<6).map { "c\($0)" })
            let meta = try #require(try await log2.segmentMetas().first { $0.value.segmentId == segment })
            #expect(meta.value.state == .completed && meta.value.lastEntryId == 5)
            try await w2.close()
            await client2.closeNodes()
        }
    }

    @Test func recoveryRefusesWhenTooFewNodesKnowTheSegment() async throws {
        try await withQuorum { env, cluster in
            let client1 = try cluster.client()
            let log1 = try await client1.createLog("q")
            let w1 = try await log1.openWriter()
            for i in 0..<3 { _ = try await w1.append(bytes("d\(i)")) }
            await client1.closeNodes()
            await cluster.stop(1)
            await cluster.stop(2)
            try await env.restart()
            let client2 = try cluster.client()
            let log2 = try await client2.openLog("q")
            let e = await expectWoodpeckerError(.nodeUnavailable) { _ = try await log2.openWriter() }
            #expect(e?.isRetryable == true)
            #expect(e?.message.contains("1 of the ensemble") == true, "\(String(describing: e))")
            try await cluster.start(1)
            let w2 = try await log2.openWriter()
            #expect(try await readAll(log2).map { text($0.payload) } == ["d0", "d1", "d2"])
            try await w2.close()
            await client2.closeNodes()
        }
    }

    /// A writer that created its segment and stopped before the first append leaves a segment no node ever saw
    /// (the broker killed right after reopening its writers). Nodes with data directories answer for it (they hold
    /// nothing, so nothing was acknowledged) and the next writer seals it empty; this used to refuse forever.
    @Test func aSegmentNoNodeEverSawIsRecoveredEmpty() async throws {
        try await withQuorum { env, cluster in
            let client1 = try cluster.client()
            let log1 = try await client1.createLog("never")
            let w1 = try await log1.openWriter()
            for i in 0..<3 { _ = try await w1.append(bytes("n\(i)")) }
            try await w1.close()
            _ = try await log1.openWriter()  // creates the next segment, appends nothing, is abandoned
            await client1.closeNodes()
            try await env.restart()
            let client2 = try cluster.client()
            let log2 = try await client2.openLog("never")
            let w2 = try await log2.openWriter()
            _ = try await w2.append(bytes("after"))
            try await w2.close()
            #expect(try await readAll(log2).map { text($0.payload) } == ["n0", "n1", "n2", "after"])
            await client2.closeNodes()
        }
    }

    @Test func aNewWriterFencesTheOldOneThroughTheNodes() async throws {
        try await withQuorum { env, cluster in
            let client1 = try cluster.client()
            let w1 = try await client1.createLog("q").openWriter()
            _ = try await w1.append(bytes("x0"))
            let client2 = try cluster.client()
            let log2 = try await client2.openLog("q")
            let w2 = try await log2.openWriter()
            let e = await expectWoodpeckerError(.lockLost) { _ = try await w1.append(bytes("x1")) }
            #expect(e?.message.contains("fenced") == true, "\(String(describing: e))")
            _ = try await w2.append(bytes("y0"))
            try await w2.close()
            #expect(try await readAll(log2).map { text($0.payload) } == ["x0", "y0"])
            await client1.closeNodes()
            await client2.closeNodes()
        }
    }

    @Test func settingsThatCannotKeepAcknowledgedDataAreRejected() throws {
        let connect: @Sendable (EventLoop, String) -> any LogStoreNodeClient = { LogStoreClient(loop: $0, address: $1) }
        var s = QuorumSettings(nodes: ["a:1", "b:1", "c:1"], connect: connect)
        #expect(throws: Never.self) { try s.validate() }
        s.ackQuorum = 1
        #expect(throws: WoodpeckerError.self) { try s.validate() }
        s = QuorumSettings(nodes: ["a:1", "a:1", "b:1"], connect: connect)
        #expect(throws: WoodpeckerError.self) { try s.validate() }
    }
}

/// Blocks on the chain of run objects of a segment (each object holds one or more consecutive blocks, the next
/// object is at the key of the block after its last), and the number of objects.
func chainLength(_ store: any ObjectStore, _ ref: SegmentRef) async throws -> (blocks: Int, objects: Int) {
    var blocks = 0
    var objects = 0
    while let run = try? await store.get(ref.blockKey(Int32(blocks))) {
        blocks += try SegmentCodec.splitRun(run).count
        objects += 1
    }
    return (blocks, objects)
}
