import Testing
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage
@testable import WoodpeckerLogStore

#if canImport(Glibc)
import Glibc
#endif

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/logstore-test-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw WoodpeckerError(.ioFailure, "mkdtemp failed") }
    return String(cString: p)
}

/// Polls `cond` every 10 ms for at most `timeoutMs`.
func eventually(timeoutMs: UInt64 = 5_000, _ cond: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Clock.monotonicMillis() + timeoutMs
    while Clock.monotonicMillis() < deadline {
        if try await cond() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return try await cond()
}

/// The blocks of a segment in object storage, following the chain of run objects from block 0 (each object
/// holds one or more consecutive blocks back to back), and the number of objects on the chain.
func chainBlocks(_ store: any ObjectStore, _ ref: SegmentRef) async throws -> (blocks: [ByteBuffer], objects: Int) {
    var out: [ByteBuffer] = []
    var objects = 0
    while true {
        let bytes: ByteBuffer
        do {
            bytes = try await store.get(ref.blockKey(Int32(out.count)))
        } catch let e as WoodpeckerError where e.code == .objectNotFound {
            return (out, objects)
        }
        let parts = try SegmentCodec.splitRun(bytes)
        for (i, part) in parts.enumerated() {
            #expect(try SegmentCodec.verifyBlock(part).blockNumber == Int32(out.count + i))
        }
        out.append(contentsOf: parts)
        objects += 1
    }
}

/// A running node on 127.0.0.1 (port 0) over a LocalFileStore in a temporary directory, and a client of it.
struct Fixture {
    let loop: EventLoop
    let root: String
    let store: LocalFileStore
    let node: LogStoreNode
    let client: LogStoreClient

    static func start(dataDir: Bool = false, options: LogStoreNodeOptions = LogStoreNodeOptions(),
                      timeoutMs: UInt64 = 5_000) async throws -> Fixture {
        let loop = EventLoop(name: "logstore-test")
        let root = try temporaryDirectory()
        let store = LocalFileStore(root: root + "/objects", loop: loop)
        let node = LogStoreNode(loop: loop, store: store, dataDirectory: dataDir ? root + "/data" : nil, options: options)
        try await node.start(host: "127.0.0.1", port: 0)
        let port = await node.port
        let client = LogStoreClient(loop: loop, address: "127.0.0.1:\(port)", requestTimeoutMs: timeoutMs)
        return Fixture(loop: loop, root: root, store: store, node: node, client: client)
    }

    func stop() async {
        await client.close()
        await node.stop()
    }
}

func expectError(_ code: WoodpeckerError.Code, _ body: () async throws -> Void,
                 sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await body()
        Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
    } catch let e as WoodpeckerError {
        #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite(.timeLimit(.minutes(1))) struct LogStoreNodeTests {
    let ref = SegmentRef(objectPrefix: "wal/", logId: 1, segmentId: 2)

    /// A node that missed `complete` (it was down, or the writer crashed and another writer recovered the segment)
    /// drops its copies once the idle segment's footer is in object storage; without a footer it keeps them.
    @Test func idleSegmentsCompletedInObjectStorageAreDropped() async throws {
        var options = LogStoreNodeOptions()
        options.idleSegmentCheckMs = 40
        let f = try await Fixture.start(dataDir: true, options: options)
        try await f.client.append(ref, block: 0, bytes: makeBlock(0), confirmedThrough: -1)
        let other = SegmentRef(objectPrefix: "wal/", logId: 1, segmentId: 3)
        try await f.client.append(other, block: 0, bytes: makeBlock(0), confirmedThrough: -1)
        try await f.store.put(ref.directory + "footer.blk", ByteBuffer(bytes: [1, 2, 3]))
        #expect(try await eventually { try await f.client.status(ref).blocks.isEmpty })
        let done = try await f.client.status(ref)
        #expect(done.fenced, "a dropped segment refuses late appends")
        await expectError(.segmentFenced) { try await f.client.append(ref, block: 1, bytes: makeBlock(1), confirmedThrough: -1) }
        try await Task.sleep(nanoseconds: 150_000_000)
        #expect(try await f.client.status(other).blocks.count == 1, "no footer: the copies are still needed")
        await f.stop()
    }

    @Test func appendThenStatusAndReadBlock() async throws {
        let f = try await Fixture.start()
        let b0 = makeBlock(0, firstEntryId: 0, count: 3)
        let b1 = makeBlock(1, firstEntryId: 3, count: 2)
        try await f.client.append(ref, block: 0, bytes: b0, confirmedThrough: -1)
        try await f.client.append(ref, block: 1, bytes: b1, confirmedThrough: -1)
        let s = try await f.client.status(ref)
        #expect(s.known && !s.fenced)
        #expect(s.blocks == [HeldBlock(blockNumber: 0, firstEntryId: 0, lastEntryId: 2, size: b0.readableBytes),
                             HeldBlock(blockNumber: 1, firstEntryId: 3, lastEntryId: 4, size: b1.readableBytes)])
        #expect(s.uploadedThrough == -1 && s.confirmedThrough == -1)
        #expect(try await f.client.readBlock(ref, number: 1) == b1)
        #expect(try await f.client.readBlock(ref, number: 2) == nil)
        let h = try await f.client.health()
        #expect(h.bufferedBytes == b0.readableBytes + b1.readableBytes)
        #expect(h.segments == 1 && !h.hasDataDirectory)
        let unknown = try await f.client.status(SegmentRef(objectPrefix: "wal/", logId: 9, segmentId: 9))
        #expect(!unknown.known)
        // A block whose number does not match, and one with a bad CRC.
        await expectError(.invalidArgument) { try await f.client.append(ref, block: 5, bytes: makeBlock(4), confirmedThrough: -1) }
        var bad = makeBlock(2).readableBytesArray
        bad[bad.count - 1] ^= 0xff
        await expectError(.corrupted) { try await f.client.append(ref, block: 2, bytes: ByteBuffer(bytes: bad), confirmedThrough: -1) }
        await expectError(.invalidArgument) { try await f.client.append(ref, block: 5000, bytes: makeBlock(5000), confirmedThrough: -1) }
        await f.stop()
    }

    @Test func reAppendIsIdempotentAndConflictingBytesAreRefused() async throws {
        let f = try await Fixture.start(dataDir: true)
        let b0 = makeBlock(0)
        try await f.client.append(ref, block: 0, bytes: b0, confirmedThrough: -1)
        try await f.client.append(ref, block: 0, bytes: b0, confirmedThrough: -1)
        await expectError(.segmentStateInvalid) {
            try await f.client.append(ref, block: 0, bytes: makeBlock(0, fill: 9), confirmedThrough: -1)
        }
        #expect(try await f.client.readBlock(ref, number: 0) == b0)
        #expect(try await f.client.health().bufferedBytes == b0.readableBytes)
        await f.stop()
    }

    @Test func fencedSegmentRefusesAppends() async throws {
        let f = try await Fixture.start()
        try await f.client.append(ref, block: 0, bytes: makeBlock(0), confirmedThrough: -1)
        let s = try await f.client.fence(ref)
        #expect(s.known && s.fenced && s.blocks.count == 1)
        await expectError(.segmentFenced) { try await f.client.append(ref, block: 1, bytes: makeBlock(1), confirmedThrough: -1) }
        // Fencing a segment the node never saw: reported unknown, and a late append from the old writer is refused.
        let other = SegmentRef(objectPrefix: "wal/", logId: 1, segmentId: 3)
        let u = try await f.client.fence(other)
        #expect(!u.known && u.fenced && u.blocks.isEmpty)
        await expectError(.segmentFenced) { try await f.client.append(other, block: 0, bytes: makeBlock(0), confirmedThrough: -1) }
        await f.stop()
    }

    @Test func confirmedBlocksAreUploadedExactlyAndDropped() async throws {
        let f = try await Fixture.start(dataDir: true)
        let blocks = (0..<6).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }
        for (n, b) in blocks.enumerated() {
            try await f.client.append(ref, block: Int32(n), bytes: b, confirmedThrough: -1)
        }
        #expect(try await f.store.head(ref.blockKey(0)) == nil)  // nothing confirmed: nothing uploaded
        _ = try await f.client.updateConfirmed(ref, through: 3, durableThrough: -1, uploader: true)
        #expect(try await eventually { try await f.client.status(ref).uploadedThrough == 3 })
        // The four confirmed blocks went up together, as one run object at block 0's key.
        let first = try await chainBlocks(f.store, ref)
        #expect(first.blocks == Array(blocks[0...3]) && first.objects == 1)
        #expect(try await f.store.listAll(prefix: ref.directory).count == 1)
        #expect(try await f.client.status(ref).blocks.map(\.blockNumber) == [4, 5])
        // The last confirmation rides on an append.
        let b6 = makeBlock(6, firstEntryId: 18)
        _ = try await f.client.append(ref, block: 6, bytes: b6, confirmedThrough: 6, durableThrough: -1, uploader: true)
        #expect(try await eventually { try await f.client.health().bufferedBytes == 0 })
        #expect(try await chainBlocks(f.store, ref).blocks == blocks + [b6])
        // Appending an already durable block is a no-op success.
        try await f.client.append(ref, block: 2, bytes: blocks[2], confirmedThrough: 6)
        #expect(try await f.client.health().bufferedBytes == 0)
        await f.stop()
    }

    /// Nodes cut runs differently (each uploads what it holds when a slot frees). A node whose put finds another
    /// node's run at the key adopts that run's extent and continues the chain after it; a redundant object inside a
    /// run (a put that lost a race) is never taken for the chain. Before runs existed every block had its own key.
    @Test func aNodeAdoptsAnotherNodesRunAndContinuesTheChainAfterIt() async throws {
        let f = try await Fixture.start(dataDir: true)
        let blocks = (0..<8).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }
        func run(_ r: ClosedRange<Int>) -> ByteBuffer {
            var out = ByteBuffer()
            for n in r { out.writeBuffer(blocks[n]) }
            return out
        }
        // Another node put blocks 0-3 as one run; a copy of blocks 2-5 lost a race and lies inside that run.
        try await f.store.putIfAbsent(ref.blockKey(0), run(0...3))
        try await f.store.putIfAbsent(ref.blockKey(2), run(2...5))
        for n in 0..<6 { try await f.client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        _ = try await f.client.updateConfirmed(ref, through: 5, durableThrough: -1, uploader: true)
        #expect(try await eventually { try await f.client.status(ref).uploadedThrough == 5 })
        // The chain: [0-3] (adopted), then [4-5] put by this node at block 4's key, not at 2 or 6.
        var chain = try await chainBlocks(f.store, ref)
        #expect(chain.blocks == Array(blocks[0...5]) && chain.objects == 2)
        #expect(try await f.store.get(ref.blockKey(4)) == run(4...5))
        #expect(try await f.client.health().bufferedBytes == 0)
        // An object at the next key holding other bytes for a block this node holds stops its uploads.
        try await f.store.putIfAbsent(ref.blockKey(6), makeBlock(6, firstEntryId: 18, fill: 99))
        _ = try await f.client.append(ref, block: 6, bytes: blocks[6], confirmedThrough: 6, durableThrough: -1, uploader: true)
        await expectError(.segmentStateInvalid) { try await f.client.complete(ref, lastBlock: 6) }
        #expect(try await f.client.readBlock(ref, number: 6) == blocks[6])  // never dropped
        chain = try await chainBlocks(f.store, ref)
        #expect(chain.blocks.count == 7 && chain.blocks[6] != blocks[6])
        await f.stop()
    }

    /// A run that reaches the size target starts at once; below it the first block waits `runDelayMs`; a run never
    /// exceeds `maxRunBytes`.
    @Test func runsStartAtTheTargetSizeAndStayUnderTheBound() async throws {
        let size = makeBlock(0).readableBytes
        var options = LogStoreNodeOptions()
        options.runDelayMs = 60_000
        options.standbyDelayMs = 60_000
        options.runTargetBytes = 3 * size
        options.maxRunBytes = 4 * size
        let f = try await Fixture.start(options: options)
        let blocks = (0..<10).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }
        for n in 0..<2 { try await f.client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        _ = try await f.client.updateConfirmed(ref, through: 1, durableThrough: -1, uploader: true)
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(try await f.client.status(ref).uploadedThrough == -1, "two blocks are below the target: they wait")
        for n in 2..<10 { try await f.client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        _ = try await f.client.updateConfirmed(ref, through: 9, durableThrough: -1, uploader: true)
        // 0-3 and 4-7 fill runs to the bound; 8-9 stay below the target and wait.
        #expect(try await eventually { try await f.client.status(ref).uploadedThrough == 7 })
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(try await f.client.status(ref).uploadedThrough == 7)
        let chain = try await chainBlocks(f.store, ref)
        #expect(chain.blocks == Array(blocks[0...7]) && chain.objects == 2)
        // `complete` uploads the rest without waiting.
        try await f.client.complete(ref, lastBlock: 9)
        #expect(try await chainBlocks(f.store, ref).blocks == blocks)
        await f.stop()

        // A node more than half full uploads at once, below the target and before the delays.
        options.maxBufferedBytes = 3 * size
        let full = try await Fixture.start(options: options)
        for n in 0..<2 { try await full.client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        _ = try await full.client.updateConfirmed(ref, through: 1, durableThrough: -1, uploader: true)
        #expect(try await eventually(timeoutMs: 2_000) { try await full.client.status(ref).uploadedThrough == 1 })
        #expect(try await chainBlocks(full.store, ref).blocks == Array(blocks[0...1]))
        await full.stop()
    }

    @Test func fenceObjectInStorageStopsUploads() async throws {
        let f = try await Fixture.start()
        _ = try await f.client.append(ref, block: 0, bytes: makeBlock(0), confirmedThrough: 0, durableThrough: -1, uploader: true)
        #expect(try await eventually { try await f.client.status(ref).uploadedThrough == 0 })
        // A recovering writer fences at the key after the chain's last object.
        try await f.store.put(ref.blockKey(1), ByteBuffer(string: "F"))
        for n: Int32 in 1...2 { try await f.client.append(ref, block: n, bytes: makeBlock(n), confirmedThrough: -1) }
        _ = try await f.client.updateConfirmed(ref, through: 2, durableThrough: -1, uploader: true)
        #expect(try await eventually { try await f.client.status(ref).fenced })
        let s = try await f.client.status(ref)
        #expect(s.uploadedThrough <= 0)
        #expect(s.blocks.map(\.blockNumber).contains(1))
        #expect(try await f.store.get(ref.blockKey(1)) == ByteBuffer(string: "F"))
        await expectError(.segmentFenced) { try await f.client.append(ref, block: 3, bytes: makeBlock(3), confirmedThrough: 2) }
        await f.stop()
    }

    @Test func completeMakesAllBlocksDurableOrNamesTheMissingOne() async throws {
        let f = try await Fixture.start(dataDir: true)
        let blocks = (0..<4).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }
        for n in [0, 1, 3] { try await f.client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        do {
            try await f.client.complete(ref, lastBlock: 3)
            Issue.record("complete succeeded with block 2 missing")
        } catch let e as WoodpeckerError {
            #expect(e.code == .objectNotFound)
            #expect(e.message.contains("block 2"))
        }
        // Another node uploaded block 2.
        try await f.store.putIfAbsent(ref.blockKey(2), blocks[2])
        try await f.client.complete(ref, lastBlock: 3)
        // Blocks 0-1 in one run, block 2 found (not uploaded again), block 3 after it.
        let chain = try await chainBlocks(f.store, ref)
        #expect(chain.blocks == blocks && chain.objects == 3)
        let s = try await f.client.status(ref)
        #expect(s.fenced && s.blocks.isEmpty && s.uploadedThrough == 3)
        #expect(try await f.client.health().bufferedBytes == 0)
        await expectError(.segmentFenced) { try await f.client.append(ref, block: 4, bytes: makeBlock(4), confirmedThrough: 3) }
        await f.stop()
    }

    @Test func appendsBeyondTheMemoryBoundAreRefused() async throws {
        var options = LogStoreNodeOptions()
        let size = makeBlock(0).readableBytes
        options.maxBufferedBytes = 2 * size
        let f = try await Fixture.start(options: options)
        try await f.client.append(ref, block: 0, bytes: makeBlock(0), confirmedThrough: -1)
        try await f.client.append(ref, block: 1, bytes: makeBlock(1), confirmedThrough: -1)
        do {
            try await f.client.append(ref, block: 2, bytes: makeBlock(2), confirmedThrough: -1)
            Issue.record("append beyond the bound succeeded")
        } catch let e as WoodpeckerError {
            #expect(e.code == .bufferFull && e.isRetryable)
        }
        // Uploading frees room.
        try await f.client.updateConfirmed(ref, through: 1)
        #expect(try await eventually { try await f.client.health().bufferedBytes == 0 })
        try await f.client.append(ref, block: 2, bytes: makeBlock(2), confirmedThrough: 1)
        await f.stop()
    }

    @Test func unsupportedVersionIsAnsweredAndTheConnectionStaysUsable() async throws {
        let f = try await Fixture.start()
        let id = await f.client.reserveRequestId()
        let frame = LogStoreWire.frame(opcode: LogStoreOpcode.health.rawValue, requestId: id, version: 9) { _ in }
        await expectError(.unsupportedVersion) { _ = try await f.client.callRaw(frame, requestId: id, opcode: .health) }
        // A malformed body is answered too.
        let id2 = await f.client.reserveRequestId()
        let bad = LogStoreWire.frame(opcode: LogStoreOpcode.fence.rawValue, requestId: id2) { $0.writeInteger(UInt8(1)) }
        await expectError(.invalidArgument) { _ = try await f.client.callRaw(bad, requestId: id2, opcode: .fence) }
        let h = try await f.client.health()
        #expect(h.incarnation == f.node.incarnation)
        await f.stop()
    }

    @Test func restartOnTheDataDirectoryKeepsBlocksAndFences() async throws {
        let loop = EventLoop(name: "logstore-restart")
        let root = try temporaryDirectory()
        let store = LocalFileStore(root: root + "/objects", loop: loop)
        let other = SegmentRef(objectPrefix: "other/", logId: 5, segmentId: 0)
        let blocks = (0..<3).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }
        do {
            let node = LogStoreNode(loop: loop, store: store, dataDirectory: root + "/data")
            try await node.start(host: "127.0.0.1", port: 0)
            let port = await node.port
            let client = LogStoreClient(loop: loop, address: "127.0.0.1:\(port)")
            for n in 0..<3 { try await client.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
            _ = try await client.fence(other)
            await client.close()
            await node.stop()
        }
        // A node killed mid-write leaves a torn record at the end of a file: it is cut off on start.
        let segmentFile = root + "/data/" + SegmentFiles.fileName(ref)
        let sizeBefore = try fileSize(segmentFile)
        try appendGarbage(segmentFile, [0, 0, 0, 9, 2, 0])
        let node = LogStoreNode(loop: loop, store: store, dataDirectory: root + "/data")
        try await node.start(host: "127.0.0.1", port: 0)
        #expect(try fileSize(segmentFile) == sizeBefore)
        let port = await node.port
        let client = LogStoreClient(loop: loop, address: "127.0.0.1:\(port)")
        let s = try await client.status(ref)
        #expect(s.known && !s.fenced)
        #expect(s.blocks.map(\.blockNumber) == [0, 1, 2])
        for n in 0..<3 { #expect(try await client.readBlock(ref, number: Int32(n)) == blocks[n]) }
        #expect(try await client.status(other).fenced)
        await expectError(.segmentFenced) { try await client.append(other, block: 0, bytes: blocks[0], confirmedThrough: -1) }
        // Uploads resume from what was reloaded.
        try await client.updateConfirmed(ref, through: 2)
        #expect(try await eventually { try await client.health().bufferedBytes == 0 })
        #expect(try await chainBlocks(store, ref).blocks == blocks)
        await client.close()
        await node.stop()
    }

    @Test func conflictingObjectStopsUploadsOfThatSegment() async throws {
        let f = try await Fixture.start()
        try await f.store.put(ref.blockKey(0), makeBlock(0, fill: 99))
        let b0 = makeBlock(0)
        try await f.client.append(ref, block: 0, bytes: b0, confirmedThrough: 0)
        await expectError(.segmentStateInvalid) { try await f.client.complete(ref, lastBlock: 0) }
        #expect(try await f.client.readBlock(ref, number: 0) == b0)  // never dropped
        #expect(try await f.store.get(ref.blockKey(0)) == makeBlock(0, fill: 99))  // never overwritten
        await f.stop()
    }

    @Test func manyPipelinedAppendsOnOneConnection() async throws {
        let f = try await Fixture.start(dataDir: true)
        let count = 200
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<count {
                group.addTask(executorPreference: f.loop) {
                    try await f.client.append(ref, block: Int32(n), bytes: makeBlock(Int32(n), firstEntryId: Int64(n) * 3),
                                              confirmedThrough: -1)
                }
            }
            for try await _ in group {}
        }
        #expect(try await f.client.status(ref).blocks.count == count)
        try await f.client.complete(ref, lastBlock: Int32(count - 1))
        // All confirmed at once by `complete`: one run object (far below the run size bound).
        let chain = try await chainBlocks(f.store, ref)
        #expect(chain.blocks == (0..<count).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3) })
        #expect(chain.objects == 1)
        #expect(try await f.store.listAll(prefix: ref.directory).count == 1)
        #expect(try await f.client.health().bufferedBytes == 0)
        await f.stop()
    }

    @Test func oversizedFrameClosesOnlyThatConnection() async throws {
        let f = try await Fixture.start()
        let raw = try await TCPClient.connect(loop: f.loop, host: "127.0.0.1", port: await f.node.port)
        var header = ByteBuffer()
        header.writeInteger(UInt32(Limits.maxRequestSizeBytes + 1))
        header.writeInteger(UInt16(1))
        try await raw.send(header)
        _ = await raw.waitClosed()
        #expect(try await f.client.health().incarnation == f.node.incarnation)
        await f.stop()
    }

    @Test func clientReportsNodeUnavailableAndReconnects() async throws {
        let f = try await Fixture.start()
        let port = await f.node.port
        let first = try await f.client.health()
        await f.node.stop()
        await expectError(.nodeUnavailable) { _ = try await f.client.health() }
        let node2 = LogStoreNode(loop: f.loop, store: f.store, dataDirectory: nil)
        try await node2.start(host: "127.0.0.1", port: port)
        let second = try await f.client.health()
        #expect(second.incarnation != first.incarnation)
        await f.client.close()
        await expectError(.clientClosed) { _ = try await f.client.health() }
        await node2.stop()
    }

    @Test func requestTimesOutAgainstASilentServer() async throws {
        let loop = EventLoop(name: "logstore-silent")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in SilentHandler() }
        let client = LogStoreClient(loop: loop, address: "127.0.0.1:\(server.port)", requestTimeoutMs: 300)
        let start = Clock.monotonicMillis()
        do {
            _ = try await client.health()
            Issue.record("a silent server answered")
        } catch let e as WoodpeckerError {
            #expect(e.code == .timeout && e.isRetryable)
        }
        let elapsed = Clock.monotonicMillis() - start
        #expect(elapsed >= 250 && elapsed < 3_000)
        await client.close()
        await server.close()
    }
}

@Suite(.timeLimit(.minutes(1))) struct LogStoreClientBoundTests {
    /// With room for one request only, a second one is not sent while the first is outstanding; it waits for room
    /// within its own deadline.
    @Test func outstandingBytesAreBounded() async throws {
        let loop = EventLoop(name: "logstore-bound")
        let received = SilentHandler.Counter()
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in SilentHandler(counter: received) }
        let client = LogStoreClient(loop: loop, address: "127.0.0.1:\(server.port)", requestTimeoutMs: 600,
                                    maxOutstandingBytes: 20)
        async let first: Result<NodeHealth, any Error> = Result(catching: { try await client.health() })
        try await Task.sleep(nanoseconds: 100_000_000)
        async let second: Result<NodeHealth, any Error> = Result(catching: { try await client.health() })
        try await Task.sleep(nanoseconds: 200_000_000)
        // 300 ms in: the first request (16 bytes) went out, the second is held back.
        #expect(await loop.run { received.bytes } == 16)
        let (a, b) = await (first, second)
        for r in [a, b] {
            guard case let .failure(e as WoodpeckerError) = r else { Issue.record("expected a timeout, got \(r)"); continue }
            #expect(e.code == .timeout)
        }
        await client.close()
        await server.close()
    }
}

extension EventLoop {
    /// Runs `body` on the loop thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in execute { c.resume(returning: body()) } }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Reads and ignores every byte.
final class SilentHandler: TCPConnectionHandler {
    final class Counter: @unchecked Sendable {
        // Written on the loop thread, read by the test after the requests finished.
        var bytes = 0
    }
    let counter: Counter?
    init(counter: Counter? = nil) { self.counter = counter }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        counter?.bytes += data.readableBytes
        data.readerIndex = data.writerIndex
    }
    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {}
}

func fileSize(_ path: String) throws -> Int {
    var st = stat()
    guard stat(path, &st) == 0 else { throw WoodpeckerError(.ioFailure, "stat \(path)") }
    return Int(st.st_size)
}

func appendGarbage(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_APPEND)
    guard fd >= 0 else { throw WoodpeckerError(.ioFailure, "open \(path)") }
    defer { close(fd) }
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}
