import Foundation
import Testing
@testable import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

@Suite struct WALMaintenanceTests {
    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func truncationAndGarbageCollection(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with { $0.segmentMaxBytes = 100 }
            let log = try await env.client(config).createLog("gc")
            let w = try await log.openWriter()
            // 10-byte entries: ten per segment, segments 0...3, the last one active.
            for i in 0..<35 { _ = try await w.append(bytes(String(format: "entry-%04d", i))) }
            #expect(try await log.segmentMetas().map(\.value.state) == [.completed, .completed, .completed, .active])
            let dirs = { (s: Int) in "\(log.logId)/\(s)/" }

            // An open reader in segment 0 holds back GC of segment 0 and everything after it.
            let early = try await log.openReader(from: .earliest)
            try await log.truncate(upTo: LogMessageId(segmentId: 2, entryId: 4))
            try await log.truncate(upTo: LogMessageId(segmentId: 1, entryId: 0))  // backwards: no-op
            #expect(try await log.logMeta().value.truncatedSegmentId == 2)
            #expect(try await log.logMeta().value.truncatedEntryId == 4)
            try await log.collectGarbage()
            #expect(try await log.segmentMetas().count == 4)
            await early.close()

            let r = try await log.openReader(from: .earliest)
            #expect(try await r.readNext(waitMs: 0).id == LogMessageId(segmentId: 2, entryId: 5))
            await r.close()
            try await log.collectGarbage()
            #expect(try await log.segmentMetas().map(\.value.segmentId) == [2, 3])
            #expect(try await env.store.listAll(prefix: dirs(0)).isEmpty)
            #expect(try await env.store.listAll(prefix: dirs(1)).isEmpty)
            #expect(try await !env.store.listAll(prefix: dirs(2)).isEmpty)
            let afterGC = try await readAll(log)
            #expect(afterGC.first?.id == LogMessageId(segmentId: 2, entryId: 5))
            #expect(afterGC.count == 5 + 5)  // 2:5...2:9 and 3:0...3:4
            // A reader at an explicit id inside a collected segment moves on to what exists.
            #expect(try await readAll(log, from: .id(.earliest)).first?.id == LogMessageId(segmentId: 2, entryId: 0))

            // Truncating into the active segment never collects it.
            try await log.truncate(upTo: LogMessageId(segmentId: 3, entryId: 2))
            try await log.collectGarbage()
            #expect(try await log.segmentMetas().map(\.value.segmentId) == [3])
            #expect(try await readAll(log).map { text($0.payload) } == (33..<35).map { String(format: "entry-%04d", $0) })
            _ = try await w.append(bytes("entry-0035"))
            try await w.close()
            try await env.restart()
            let cold = try await env.client(config).openLog("gc")
            #expect(try await readAll(cold).map { text($0.payload) } == (33..<36).map { String(format: "entry-%04d", $0) })
        }
    }

    static func completedSegment(_ env: WALEnv, _ client: WoodpeckerClient, _ name: String, entries: Int) async throws -> Log {
        let log = try await client.createLog(name)
        let w = try await log.openWriter()
        for i in 0..<entries {
            _ = try await w.append(ByteBuffer(bytes: Array("c\(i):".utf8) + [UInt8](repeating: UInt8(i & 0xff), count: 200)),
                                   key: Int64(i), timestamp: Int64(i * 2))
        }
        try await w.close()
        return log
    }

    /// Segments of many logs complete together (they roll at the same size and age); their compactions, each
    /// holding about two merged objects in memory, run one at a time per client (`maxConcurrentCompactions`).
    /// With a bound of 3 the same three compactions do overlap, so the check can tell.
    @Test(arguments: [1, 3])
    func compactionsOfManyLogsRunWithinTheClientsBound(_ bound: Int) async throws {
        try await withWAL(.memory) { env in
            let config = WALConfig.test.with {
                $0.flushMaxEntries = 2
                $0.compactionTargetBytes = 2000
                $0.maxConcurrentCompactions = bound
            }
            let faults = FaultStore(env.store, loop: env.loop)
            faults.setFaults { $0.putDelayMs = { $0.contains("/m_") ? 20 : 0 } }  // merged objects take a while
            let client = env.client(config, wrap: { _ in faults })
            var logs: [Log] = []
            for i in 0..<3 { logs.append(try await Self.completedSegment(env, client, "many\(i)", entries: 20)) }
            await withTaskGroup(of: Void.self) { g in
                for log in logs { g.addTask(executorPreference: env.loop) { await log.audit() } }
            }
            for log in logs { #expect(try await log.segmentMetas()[0].value.state == .sealed) }
            #expect(client.compactionSlots.peak == bound)
            for i in logs.indices {
                #expect(try await readAll(try await env.client(config).openLog("many\(i)")).count == 20)
            }
        }
    }

    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func compactionMergesBlocksAndIsIdempotent(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with {
                $0.flushMaxEntries = 2
                $0.compactionTargetBytes = 2000
            }
            let log = try await Self.completedSegment(env, env.client(config), "compact", entries: 40)
            let dir = "\(log.logId)/0/"
            let before = try await readAll(try await env.client(config).openLog("compact"))
            #expect(before.count == 40)
            // A reader that has loaded the original footer and is half way through.
            let midway = try await log.openReader(from: .earliest)
            #expect(try await midway.next(maxEntries: 15, waitMs: 0).count == 15)

            let seg = try await log.segmentMetas()[0]
            #expect(seg.value.state == .completed)
            try await log.compact(seg)
            let keys = try await env.store.listAll(prefix: dir).map { String($0.key.dropFirst(dir.count)) }
            #expect(keys.allSatisfy { $0.hasPrefix("m_") || $0 == "footer.blk" }, "\(keys)")
            let merged = keys.filter { $0.hasPrefix("m_") }.count
            #expect(merged >= 3 && merged < 20, "\(keys)")
            let footer = try SegmentCodec.decodeFooter(try await env.store.get(dir + "footer.blk"))
            #expect(footer.compacted)
            #expect(footer.lac == 39)
            #expect(try await log.segmentMetas()[0].value.state == .sealed)

            let rest = try await midway.next(maxEntries: 100, waitMs: 0)
            #expect(rest.map(\.id.entryId) == Array(15..<40))
            #expect(rest == Array(before[15...]))
            #expect(try await readAll(try await env.client(config).openLog("compact")) == before)
            #expect(try await readAll(log, from: .key(33)).first == before[33])

            // Running it again changes nothing.
            try await log.compact(try await log.segmentMetas()[0])
            await log.audit()
            let keys2 = try await env.store.listAll(prefix: dir).map { String($0.key.dropFirst(dir.count)) }
            #expect(keys2 == keys)
            #expect(try await readAll(try await env.client(config).openLog("compact")) == before)
        }
    }

    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func compactionRecoversFromACrashAtEveryStep(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let config = WALConfig.test.with {
                $0.flushMaxEntries = 3
                $0.compactionTargetBytes = 1500
            }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await Self.completedSegment(env, client, "crashcompact", entries: 30)
            let dir = "\(log.logId)/0/"
            let before = try await readAll(try await env.client(config).openLog("crashcompact"))

            // Crash 1: merged blocks written, footer not rewritten.
            faults.setFaults { $0.putError = { key in key.hasSuffix("footer.blk") ? WoodpeckerError(.ioFailure, "injected crash") : nil } }
            _ = await expectWoodpeckerError(.ioFailure) { try await log.compact(try await log.segmentMetas()[0]) }
            #expect(try await env.store.listAll(prefix: dir).contains { $0.key.contains("/m_") })
            #expect(try SegmentCodec.decodeFooter(try await env.store.get(dir + "footer.blk")).compacted == false)
            #expect(try await log.segmentMetas()[0].value.state == .completed)
            #expect(try await readAll(try await env.client(config).openLog("crashcompact")) == before)

            // Crash 2: footer rewritten and segment sealed, originals not yet deleted.
            faults.setFaults {
                $0.putError = { _ in nil }
                $0.deleteError = { _ in WoodpeckerError(.ioFailure, "injected crash") }
            }
            _ = await expectWoodpeckerError(.ioFailure) { try await log.compact(try await log.segmentMetas()[0]) }
            #expect(try SegmentCodec.decodeFooter(try await env.store.get(dir + "footer.blk")).compacted)
            #expect(try await env.store.head(dir + "0.blk") != nil)
            #expect(try await readAll(try await env.client(config).openLog("crashcompact")) == before)

            faults.setFaults { $0.deleteError = { _ in nil } }
            try await log.compact(try await log.segmentMetas()[0])
            let keys = try await env.store.listAll(prefix: dir).map { String($0.key.dropFirst(dir.count)) }
            #expect(keys.allSatisfy { $0.hasPrefix("m_") || $0 == "footer.blk" }, "\(keys)")
            #expect(try await log.segmentMetas()[0].value.state == .sealed)
            #expect(try await readAll(try await env.client(config).openLog("crashcompact")) == before)
        }
    }

    @Test func corruptedBlockIsReportedNeverReturned() async throws {
        try await withWAL(.file) { env in
            let config = WALConfig.test
            let log = try await env.client(config).createLog("corrupt")
            let w = try await log.openWriter()
            for i in 0..<15 { _ = try await w.append(bytes("payload-\(i)-xxxxxxxxxxxxxxxx")) }
            try await w.close()
            // Sequential appends flush one entry per block. Flip one byte inside block 3's payload on disk.
            let path = env.dir + "/objects/\(log.logId)/0/3.blk"
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            data[data.count - 5] ^= 0x20
            try data.write(to: URL(fileURLWithPath: path))

            try await env.restart()
            let cold = try await env.client(config).openLog("corrupt")
            let r = try await cold.openReader(from: .earliest)
            let first = try await r.next(maxEntries: 100, waitMs: 0)
            #expect(first.map { text($0.payload) } == (0..<3).map { "payload-\($0)-xxxxxxxxxxxxxxxx" })
            for _ in 0..<2 {
                let e = await expectWoodpeckerError(.corrupted) { _ = try await r.next(maxEntries: 100, waitMs: 0) }
                #expect(e?.message.contains("\(log.logId)/0/3.blk") == true, "\(String(describing: e))")
                #expect(e?.message.contains(env.dir) == true, "\(String(describing: e))")
            }
            let e = await expectWoodpeckerError(.corrupted) { _ = try await r.readNext(waitMs: 0) }
            #expect(e != nil)
            await r.close()
            // The entries after the bad block are still reachable by id.
            #expect(try await readAll(cold, from: .id(LogMessageId(segmentId: 0, entryId: 10))).map { text($0.payload) }
                == (10..<15).map { "payload-\($0)-xxxxxxxxxxxxxxxx" })
        }
    }
}
