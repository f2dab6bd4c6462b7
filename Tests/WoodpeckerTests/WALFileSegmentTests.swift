import Foundation
import Testing
@testable import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// The local layout (one `data.log` per segment): torn tails, corruption and cross-client fencing on real files.
@Suite(.timeLimit(.minutes(2))) struct WALFileSegmentTests {
    /// A crash mid-write leaves a partial block at the end of data.log: the next writer seals the segment at the
    /// last complete block, and every acknowledged entry reads back.
    @Test func tornTailIsDroppedAndAcknowledgedEntriesSurvive() async throws {
        try await withWAL(.segments) { env in
            let c = env.client()
            let log = try await c.createLog("torn")
            let w = try await log.openWriter()
            var acked: [String] = []
            for i in 0..<20 {
                _ = try await w.append(bytes("entry-\(i)"))
                acked.append("entry-\(i)")
            }
            // Simulate a torn write after the last acknowledged block: append garbage that looks like a record.
            let path = env.dir + "/segments/\(log.logId)/0/data.log"
            let fh = try #require(FileHandle(forWritingAtPath: path))
            fh.seekToEndOfFile()
            fh.write(Data([0x11, 0x22, 0x33, 0x44, 0x05, 0x40, 0x00, 0x00, 0x00, 0xAA, 0xBB]))
            try fh.close()
            try await env.restart()
            let c2 = env.client()
            let log2 = try await c2.openLog("torn")
            let w2 = try await log2.openWriter()  // fences and seals segment 0
            let next = try await w2.append(bytes("after"))
            #expect(next.segmentId == 1)
            let all = try await readAll(log2).map { text($0.payload) }
            #expect(all == acked + ["after"])
            let metas = try await log2.segmentMetas()
            #expect(metas[0].value.state == .completed)
            #expect(metas[0].value.lastEntryId == 19)
        }
    }

    /// A flipped byte inside a sealed block is reported with the file path, and the entry is never returned.
    @Test func corruptedBlockNamesTheFile() async throws {
        try await withWAL(.segments) { env in
            let c = env.client()
            let log = try await c.createLog("corrupt")
            let w = try await log.openWriter()
            for i in 0..<5 { _ = try await w.append(bytes("payload-number-\(i)")) }
            try await w.close()
            let path = env.dir + "/segments/\(log.logId)/0/data.log"
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            // Flip a byte inside the first data record (after the header and block header records).
            data[120] ^= 0xFF
            try data.write(to: URL(fileURLWithPath: path))
            try await env.restart()
            let log2 = try await env.client().openLog("corrupt")
            do {
                let got = try await readAll(log2)
                Issue.record("read \(got.count) entries from a corrupted block")
            } catch let e as WoodpeckerError {
                #expect(e.code == .corrupted)
                #expect(e.message.contains("data.log"))
            }
        }
    }

    /// Two clients on the same files: the second writer fences the first, whose next append fails with lockLost;
    /// everything the first acknowledged is readable.
    @Test func secondWriterFencesTheFirstAcrossClients() async throws {
        try await withWAL(.segments) { env in
            let a = try await env.client().createLog("fence")
            let wa = try await a.openWriter()
            var acked: [String] = []
            for i in 0..<10 {
                _ = try await wa.append(bytes("a-\(i)"))
                acked.append("a-\(i)")
            }
            let b = try await env.client().openLog("fence")  // a second client: its own Log object
            let wb = try await b.openWriter()
            await #expect(throws: WoodpeckerError.self) { _ = try await wa.append(bytes("late")) }
            let id = try await wb.append(bytes("b-0"))
            #expect(id.segmentId == 1)
            #expect(try await readAll(b).map { text($0.payload) } == acked + ["b-0"])
        }
    }
}

/// A reader in another process than the writer finds a local segment's blocks by probing its file once per block
/// (`readRun(number:)` on a store made per use): each probe reads only what was appended since the last one.
@Suite(.timeLimit(.minutes(1))) struct FileSegmentProbeTests {
    @Test func probingAGrowingFileReadsOnlyWhatWasAppended() async throws {
        let loop = EventLoop(name: "probe")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wp-probe-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let writer = FileSegmentStore(loop: loop, root: root, logId: 7, segmentId: 0)
        var total = 0
        let blocks = 40
        for n in 0..<blocks {
            let payload = ByteBuffer(bytes: [UInt8](repeating: UInt8(n), count: 10_000))
            let block = SegmentCodec.encodeBlock(blockNumber: Int32(n), firstEntryId: Int64(n),
                                                 entries: [SegmentEntry(key: Int64(n), timestamp: 1, payload: payload)],
                                                 includeHeader: false)
            try await writer.writeBlock(Int32(n), block)
            total += block.readableBytes
            let reader = FileSegmentStore(loop: loop, root: root, logId: 7, segmentId: 0)
            let run = try #require(try await reader.readRun(number: Int32(n)))
            #expect(run.map(\.info.blockNumber) == [Int32(n)])
            #expect(run.first?.entries.first?.payload == payload)
            #expect(try await reader.readRun(number: Int32(n + 1)) == nil, "no block past the end")
        }
        // A fresh store still sees every block, continuing from what earlier probes learned.
        #expect(try await FileSegmentStore(loop: loop, root: root, logId: 7, segmentId: 0).probeBlocks().count == blocks)
        // Each byte read about once; the old probe re-read the whole file every time (about 40x the file here).
        let scanned = try #require(FileSegmentStore.probeScannedBytes(root + "/7/0/data.log"))
        #expect(scanned <= 2 * total, "probes read \(scanned) bytes of a \(total)-byte file")
        await writer.release()
        #expect(loop.shutdown() == 0)
    }

    /// The cache behind it holds at most `maxEntries` files and `maxBlocks` block entries, dropping the least
    /// recently probed first but never the file just probed.
    @Test func theProbeCacheForgetsTheLeastRecentFilesBeyondItsBounds() {
        var cache = FileSegmentStore.ProbeCache()
        cache.maxEntries = 3
        cache.maxBlocks = 10
        func entry(_ inode: UInt64, blocks: Int) -> FileSegmentStore.ProbeCache.Entry {
            var e = FileSegmentStore.ProbeCache.Entry(file: .init(device: 1, inode: inode))
            e.blocks = (0..<blocks).map { BlockInfo(blockNumber: Int32($0), firstEntryId: Int64($0), lastEntryId: Int64($0),
                                                     firstKey: 0, lastKey: 0, maxTimestamp: 0, size: 100) }
            return e
        }
        cache.store("a", entry(1, blocks: 4))
        cache.store("b", entry(2, blocks: 4))
        #expect(cache.lookup("a", .init(device: 1, inode: 1)) != nil)
        #expect(cache.lookup("a", .init(device: 1, inode: 9)) == nil, "another file at the same path")
        cache.store("c", entry(3, blocks: 4))  // 12 blocks > 10: "a", the least recent, goes
        #expect(cache.entries.keys.sorted() == ["b", "c"])
        cache.store("d", entry(4, blocks: 1))
        cache.store("e", entry(5, blocks: 1))  // 4 files > 3: "b" goes
        #expect(cache.entries.keys.sorted() == ["c", "d", "e"])
        cache.store("f", entry(6, blocks: 50))  // alone over the block bound: kept, every other file dropped
        #expect(cache.entries.keys.sorted() == ["f"])
    }
}
