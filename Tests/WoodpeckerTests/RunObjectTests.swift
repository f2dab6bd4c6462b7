import Testing
@testable import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// The object layout with runs: a LogStore uploads consecutive blocks as one object at the first one's key, and
/// every reader of `ObjectSegmentStore` (probe, reads by index, reads by position, compaction, fencing) follows the
/// chain of objects instead of expecting one object per block.
@Suite struct RunObjectTests {
    static let entriesPerBlock = 3

    /// Block n holds entries 3n...3n+2 with payloads "b<n>e<k>".
    static func block(_ n: Int32) -> ByteBuffer {
        let entries = (0..<entriesPerBlock).map { k in
            SegmentEntry(key: Int64(n) * 10 + Int64(k), timestamp: 1_000 + Int64(n),
                         payload: ByteBuffer(bytes: Array("b\(n)e\(k)".utf8)))
        }
        return SegmentCodec.encodeBlock(blockNumber: n, firstEntryId: Int64(n) * Int64(entriesPerBlock), entries: entries,
                                        includeHeader: n == 0)
    }

    static func run(_ blocks: ClosedRange<Int32>) -> ByteBuffer {
        var out = ByteBuffer()
        for n in blocks { out.writeBuffer(block(n)) }
        return out
    }

    /// Objects: [0-2] [3] [4-6], plus a redundant copy at key 5 (blocks 5-6, a put that lost a race: off the chain).
    static func layout() async throws -> (MemoryStore, ObjectSegmentStore) {
        let store = MemoryStore(name: "runs")
        let objects = ObjectSegmentStore(store: store, maxConcurrentWrites: 4, prefix: "wal/", logId: 1, segmentId: 0,
                                         runLocations: RunLocations())
        try await store.put(objects.blockKey(0), run(0...2))
        try await store.put(objects.blockKey(3), run(3...3))
        try await store.put(objects.blockKey(4), run(4...6))
        try await store.put(objects.blockKey(5), run(5...6))
        return (store, objects)
    }

    static func payloads(_ b: DecodedBlock) -> [String] { b.entries.map { String(decoding: $0.payload.readableBytesArray, as: UTF8.self) } }

    @Test func splitRunCutsABlockSequenceAndRejectsGapsAndTornTails() throws {
        let parts = try SegmentCodec.splitRun(Self.run(4...6))
        #expect(parts == [Self.block(4), Self.block(5), Self.block(6)])
        #expect(try SegmentCodec.decodeRun(Self.run(0...1)).map(\.info.blockNumber) == [0, 1])
        var gap = Self.block(1)
        gap.writeBuffer(Self.block(3))
        #expect(throws: WoodpeckerError.self) { try SegmentCodec.splitRun(gap) }
        var torn = Self.run(1...2)
        torn.writerIndex -= 1
        #expect(throws: WoodpeckerError.self) { try SegmentCodec.splitRun(torn) }
        #expect(throws: WoodpeckerError.self) { try SegmentCodec.splitRun(ByteBuffer()) }
        // A bit flip inside a later block passes the framing split but not the decode.
        var flipped = Self.run(0...1).readableBytesArray
        flipped[flipped.count - 2] ^= 0x40
        #expect(try SegmentCodec.splitRun(ByteBuffer(bytes: flipped)).count == 2)
        #expect(throws: WoodpeckerError.self) { try SegmentCodec.decodeRun(ByteBuffer(bytes: flipped)) }
    }

    @Test func probeFollowsTheChainAndEveryBlockReadsBack() async throws {
        let (_, objects) = try await Self.layout()
        let infos = try await objects.probeBlocks()
        #expect(infos.map(\.blockNumber) == Array(0...6))
        #expect(infos.map(\.firstEntryId) == (0...6).map { Int64($0) * 3 })
        for i in infos.indices {
            let b = try #require(try await objects.readBlock(at: i, of: infos, compacted: false))
            #expect(b.info == infos[i])
            #expect(Self.payloads(b) == (0..<3).map { "b\(i)e\($0)" })
        }
        // Blocks inside runs were located once (one listing) and remembered.
        #expect(objects.runLocations?.spot(objects.dir, 2) == RunSpot(start: 0, offset: Self.run(0...1).readableBytes))
        #expect(objects.runLocations?.spot(objects.dir, 6) == RunSpot(start: 4, offset: Self.run(4...5).readableBytes))
        // A reader following the chain gets whole runs.
        #expect(try await objects.readRun(number: 4)?.map(\.info.blockNumber) == [4, 5, 6])
        #expect(try await objects.readRun(number: 7) == nil)
    }

    /// Once a block's run is located (one listing for the segment), reading any block of that segment is one
    /// ranged GET where it lies, not a GET of its own key first (which misses for every block inside a run).
    @Test func locatedBlocksAreReadWithOneRequestEach() async throws {
        let (store, _) = try await Self.layout()
        let loop = EventLoop(name: "runs-count")
        defer { _ = loop.shutdown() }
        let counting = FaultStore(store, loop: loop)
        let objects = ObjectSegmentStore(store: counting, maxConcurrentWrites: 4, prefix: "wal/", logId: 1, segmentId: 0,
                                         runLocations: RunLocations())
        let infos = try await objects.probeBlocks()
        var before = counting.lookupCount
        #expect(try await objects.readBlock(at: 1, of: infos, compacted: false)?.info == infos[1])
        #expect(counting.lookupCount - before == 2, "the first: its own key (missing), then the run after a listing")
        for i in [2, 0, 5, 6, 4, 3] {
            before = counting.lookupCount
            #expect(try await objects.readBlock(at: i, of: infos, compacted: false)?.info == infos[i])
            #expect(counting.lookupCount - before == 1, "block \(i)")
        }
    }

    @Test func blocksBeyondTheChainAreNotFound() async throws {
        let (store, objects) = try await Self.layout()
        var infos = try await objects.probeBlocks()
        // Block 7 is listed (a writer's acknowledged block) but not uploaded yet.
        let b7 = try SegmentCodec.decodeBlock(Self.block(7))
        infos.append(b7.info)
        #expect(try await objects.readBlock(at: 7, of: infos, compacted: false) == nil)
        try await store.put(objects.blockKey(7), Self.run(7...8))
        #expect(try await objects.readBlock(at: 7, of: infos, compacted: false)?.info == b7.info)
    }

    @Test func aCorruptRunEndsTheChainAndFencingSealsAfterTheLastGoodObject() async throws {
        let (store, objects) = try await Self.layout()
        var bad = Self.run(4...6).readableBytesArray
        bad[bad.count - 3] ^= 0x01
        try await store.put(objects.blockKey(4), ByteBuffer(bytes: bad))
        #expect(try await objects.probeBlocks().map(\.blockNumber) == [0, 1, 2, 3])
        // Key 4 is taken by the corrupt object, so a fence cannot be placed after block 3: it is reported.
        await #expect(throws: WoodpeckerError.self) { _ = try await objects.fence(retries: 1) }

        let (store2, objects2) = try await Self.layout()
        let sealed = try await objects2.fence(retries: 1)
        #expect(sealed.map(\.blockNumber) == Array(0...6))
        #expect(SegmentCodec.isFenceObject(try await store2.get(objects2.blockKey(7))))
        // A late upload at the fenced key is refused.
        await #expect(throws: WoodpeckerError.self) { try await objects2.writeBlock(7, Self.block(7)) }
    }

    @Test func compactionReadsRunsAndMergedBlocksReadBack() async throws {
        let (store, objects) = try await Self.layout()
        let infos = try await objects.probeBlocks()
        let footer = SegmentFooter(blocks: infos, lac: 19, compacted: false, totalRecords: 21)
        try await objects.writeFooter(footer)
        let compacted = try #require(try await objects.compact(footer, targetBytes: Self.run(0...2).readableBytes))
        #expect(compacted.compacted && compacted.lac == 19)
        var all: [String] = []
        for i in compacted.blocks.indices {
            all += Self.payloads(try #require(try await objects.readBlock(at: i, of: compacted.blocks, compacted: true)))
        }
        // Entries up to the LAC (19 of 0...20), in order.
        #expect(all == (0...6).flatMap { n in (0..<3).map { "b\(n)e\($0)" } }.prefix(20).map { $0 })
        try await objects.removeOriginals(after: compacted)
        let left = try await store.listAll(prefix: objects.dir).map { String($0.key.dropFirst(objects.dir.count)) }
        #expect(left.allSatisfy { $0.hasPrefix("m_") || $0 == "footer.blk" })
    }
}
