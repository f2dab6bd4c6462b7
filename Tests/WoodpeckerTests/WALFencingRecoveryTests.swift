import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

@Suite struct WALFencingRecoveryTests {
    enum Opener: String, CaseIterable, Sendable { case sameClient, secondClient }

    static let cases: [(StoreKind, Opener)] = StoreKind.allCases.flatMap { k in Opener.allCases.map { (k, $0) } }

    @Test(arguments: cases)
    func aNewWriterFencesTheOldOne(_ kind: StoreKind, _ opener: Opener) async throws {
        try await withWAL(kind) { env in
            let c1 = env.client()
            let logA = try await c1.createLog("fenced")
            let a = try await logA.openWriter()
            var acked: [LogMessageId: String] = [:]
            for i in 0..<20 { acked[try await a.append(bytes("a\(i)"))] = "a\(i)" }

            let logB = opener == .sameClient ? logA : try await env.client().openLog("fenced")
            let b = try await logB.openWriter()
            let e = await expectWoodpeckerError(.lockLost) { _ = try await a.append(bytes("a-after-fence")) }
            #expect(e?.message.contains("newer writer") == true, "\(String(describing: e))")
            #expect(await a.isWritable == false)
            _ = await expectWoodpeckerError(.lockLost) { _ = try await a.append(bytes("again")) }

            var bIds: [LogMessageId] = []
            for i in 0..<5 {
                let id = try await b.append(bytes("b\(i)"))
                acked[id] = "b\(i)"
                bIds.append(id)
            }
            #expect(bIds.map(\.segmentId) == [1, 1, 1, 1, 1], "B continues in a new segment")
            #expect(bIds.map(\.entryId) == [0, 1, 2, 3, 4])

            let logC = opener == .sameClient ? logA : try await env.client().openLog("fenced")
            let c = try await logC.openWriter()
            _ = await expectWoodpeckerError(.lockLost) { _ = try await b.append(bytes("b-after-fence")) }
            let cid = try await c.append(bytes("c0"))
            acked[cid] = "c0"
            #expect(cid == LogMessageId(segmentId: 2, entryId: 0))
            try await c.close()
            try await a.close()  // closing a fenced writer is harmless
            try await b.close()

            let got = try await readAll(try await env.client().openLog("fenced"))
            expectDenseOrder(got)
            #expect(got.count == acked.count)
            for e in got { #expect(acked[e.id] == text(e.payload), "\(e.id)") }
            let metas = try await logA.segmentMetas()
            #expect(metas.map(\.value.state) == [.completed, .completed, .completed])
            #expect(metas.map(\.value.lastEntryId) == [19, 4, 0])
        }
    }

    /// Writer A appends from many tasks while B takes over: exactly A's acknowledged entries survive in A's segment
    /// (nothing acknowledged is lost, nothing unacknowledged appears), and A's failures come after its successes.
    @Test(arguments: cases)
    func fencingWhileAppendsAreInFlight(_ kind: StoreKind, _ opener: Opener) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let config = WALConfig.test.with { $0.flushMaxEntries = 3 }
            let logA = try await env.client(config).createLog("inflight")
            let a = try await logA.openWriter()
            let results = try await withThrowingTaskGroup(of: [(String, Result<LogMessageId, WoodpeckerError>)].self) { group in
                for t in 0..<8 {
                    group.addTask(executorPreference: loop) {
                        var out: [(String, Result<LogMessageId, WoodpeckerError>)] = []
                        for i in 0..<10_000 {
                            let p = "t\(t)-\(i)"
                            do {
                                out.append((p, .success(try await a.append(bytes(p)))))
                            } catch let e as WoodpeckerError {
                                out.append((p, .failure(e)))
                                break
                            }
                        }
                        return out
                    }
                }
                group.addTask(executorPreference: loop) {
                    await loop.sleep(ms: 30)
                    let logB = opener == .sameClient ? logA : try await env.client(config).openLog("inflight")
                    let b = try await logB.openWriter()
                    _ = try await b.append(bytes("from-b"))
                    try await b.close()
                    return []
                }
                var all: [(String, Result<LogMessageId, WoodpeckerError>)] = []
                for try await r in group { all += r }
                return all
            }
            var acked: [LogMessageId: String] = [:]
            for (p, r) in results {
                switch r {
                case let .success(id): acked[id] = p
                case let .failure(e): #expect(e.code == .lockLost, "\(e)")
                }
            }
            #expect(results.contains { if case .failure = $0.1 { true } else { false } }, "A was never fenced")
            let got = try await readAll(try await env.client().openLog("inflight"))
            expectDenseOrder(got)
            let segA = got.filter { $0.id.segmentId == 0 }
            #expect(segA.count == acked.count, "segment 0 must hold exactly A's acknowledged entries")
            for e in segA { #expect(acked[e.id] == text(e.payload), "\(e.id)") }
            #expect(got.last.map { text($0.payload) } == "from-b")
        }
    }

    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func crashRecoverySealsAtTheContiguousBlocks(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with { $0.flushMaxEntries = 4 }
            let log1 = try await env.client(config).createLog("crashy")
            let a = try await log1.openWriter()
            var acked: [LogMessageId: String] = [:]
            for i in 0..<30 { acked[try await a.append(bytes("a\(i)"))] = "a\(i)" }
            let blocks = await a.blocksFlushed
            // Crash: A is abandoned without close.
            try await env.restart()
            let log2 = try await env.client(config).openLog("crashy")
            #expect(try await log2.segmentMetas().map(\.value.state) == [.active])

            // A block past a gap: block `blocks` is missing, a valid block `blocks + 1` exists. Never readable.
            let dir = "\(log2.logId)/0/"
            let stray = SegmentCodec.encodeBlock(blockNumber: Int32(blocks + 1), firstEntryId: 1000,
                                                 entries: [SegmentEntry(key: 0, timestamp: 0, payload: bytes("ghost"))],
                                                 includeHeader: false)
            try await env.store.put("\(dir)\(blocks + 1).blk", stray)

            // A reader before recovery sees the acknowledged entries (probing storage) and nothing else.
            let before = try await readAll(log2)
            #expect(before.count == 30)
            #expect(!before.contains { text($0.payload) == "ghost" })

            let b = try await log2.openWriter()
            let metas = try await log2.segmentMetas()
            #expect(metas.map(\.value.state) == [.completed, .active])
            #expect(metas[0].value.lastEntryId == 29)
            let footer = try SegmentCodec.decodeFooter(try await env.store.get("\(dir)footer.blk"))
            #expect(footer.lac == 29)
            #expect(footer.blocks.count == blocks)
            let bid = try await b.append(bytes("b0"))
            acked[bid] = "b0"
            #expect(bid == LogMessageId(segmentId: 1, entryId: 0))
            try await b.close()

            let got = try await readAll(log2)
            expectDenseOrder(got)
            #expect(got.count == 31)
            for e in got { #expect(acked[e.id] == text(e.payload), "\(e.id)") }
            #expect(!got.contains { text($0.payload) == "ghost" })
        }
    }

    /// A crash between writing the footer and updating the metadata: the next writer completes from the footer.
    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func recoveryFromAFooterWithoutMetadataCompletion(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with { $0.flushMaxEntries = 2 }
            let log = try await env.client(config).createLog("half")
            let a = try await log.openWriter()
            for i in 0..<7 { _ = try await a.append(bytes("a\(i)")) }
            let dir = "\(log.logId)/0/"
            var infos: [BlockInfo] = []
            // Sequential appends flush one entry per block: blocks 0...6.
            for n in 0..<7 {
                let blk = try SegmentCodec.decodeBlock(try await env.store.get("\(dir)\(n).blk"))
                infos.append(blk.info)
            }
            try await env.store.putIfAbsent("\(dir)footer.blk",
                                            SegmentCodec.encodeFooter(SegmentFooter(blocks: infos, lac: 6, compacted: false, totalRecords: 7)))
            try await env.restart()
            let log2 = try await env.client(config).openLog("half")
            let b = try await log2.openWriter()
            let m = try await log2.segmentMetas()
            #expect(m.map(\.value.state) == [.completed, .active])
            #expect(m[0].value.lastEntryId == 6)
            try await b.close()
            #expect(try await readAll(log2).map { text($0.payload) } == (0..<7).map { "a\($0)" })
        }
    }
}
