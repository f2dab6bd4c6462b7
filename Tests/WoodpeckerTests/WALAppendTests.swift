import Foundation
import Synchronization
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

@Suite struct WALAppendTests {
    @Test(arguments: StoreKind.allCases)
    func appendsAreOrderedExactAndDurableAcrossARestart(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let log = try await env.client().createLog("durable")
            let w = try await log.openWriter()
            var ids: [LogMessageId] = []
            for i in 0..<50 {
                // Binary payloads of varying size, including every byte value.
                let p = ByteBuffer(bytes: (0..<(1 + i * 37)).map { UInt8(truncatingIfNeeded: $0 &+ i) })
                ids.append(try await w.append(p, key: Int64(i * 3), timestamp: 1_000 + Int64(i)))
            }
            #expect(ids == (0..<50).map { LogMessageId(segmentId: 0, entryId: Int64($0)) })
            try await w.close()
            _ = await expectWoodpeckerError(.clientClosed) { _ = try await w.append(bytes("late")) }

            try await env.restart()
            let fresh = try await env.client().openLog("durable")
            let got = try await readAll(fresh)
            #expect(got.count == 50)
            for (i, e) in got.enumerated() {
                #expect(e.id == ids[i])
                #expect(e.payload.readableBytesArray == (0..<(1 + i * 37)).map { UInt8(truncatingIfNeeded: $0 &+ i) })
                #expect(e.key == Int64(i * 3))
                #expect(e.timestamp == 1_000 + Int64(i))
            }
            let metas = try await fresh.segmentMetas()
            #expect(metas.map(\.value.state) == [.completed])
            #expect(metas.first?.value.lastEntryId == 49)
            let w2 = try await fresh.openWriter()
            _ = await expectWoodpeckerError(.invalidArgument) { _ = try await w2.append(ByteBuffer()) }
            try await w2.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func manyConcurrentAppendersGetDenseIdsInOrder(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let log = try await env.client().createLog("concurrent")
            let w = try await log.openWriter()
            let tasks = 64, perTask = 200
            let perTaskIds = try await withThrowingTaskGroup(of: (Int, [LogMessageId]).self) { group in
                for t in 0..<tasks {
                    group.addTask(executorPreference: loop) {
                        var ids: [LogMessageId] = []
                        for i in 0..<perTask { ids.append(try await w.append(bytes("t\(t)-\(i)"))) }
                        return (t, ids)
                    }
                }
                var out = [[LogMessageId]](repeating: [], count: tasks)
                for try await (t, ids) in group { out[t] = ids }
                return out
            }
            for ids in perTaskIds { #expect(ids == ids.sorted() && Set(ids).count == perTask) }
            let all = perTaskIds.flatMap { $0 }
            #expect(Set(all).count == tasks * perTask)
            #expect(all.allSatisfy { $0.segmentId == 0 })
            #expect(all.map(\.entryId).sorted() == (0..<Int64(tasks * perTask)).map { $0 })
            let blocks = await w.blocksFlushed
            #expect(blocks < tasks * perTask, "group commit should batch concurrent appends (\(blocks) blocks)")
            try await w.close()
            let got = try await readAll(log)
            var expected: [LogMessageId: String] = [:]
            for (t, ids) in perTaskIds.enumerated() { for (i, id) in ids.enumerated() { expected[id] = "t\(t)-\(i)" } }
            #expect(got.count == tasks * perTask)
            for e in got where expected[e.id] != text(e.payload) {
                Issue.record("entry \(e.id) holds \(text(e.payload)), expected \(expected[e.id] ?? "nothing")")
                break
            }
        }
    }

    /// Blocks upload in parallel and land out of order; completions still fire strictly in enqueue order.
    @Test(arguments: StoreKind.allCases)
    func acknowledgementsFollowAppendOrderWhenBlocksLandOutOfOrder(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let config = WALConfig.test.with {
                $0.flushMaxEntries = 7
                $0.maxInFlightBlocks = 4
            }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            // Even blocks are slow, odd ones fast: later blocks often finish first.
            faults.setFaults { $0.putDelayMs = { key in key.hasSuffix("0.blk") || key.hasSuffix("2.blk") || key.hasSuffix("4.blk") ? UInt64.random(in: 5...25) : 0 } }
            let log = try await client.createLog("ordered")
            let w = try await log.openWriter()
            let order = Recorder<(Int, LogMessageId)>()
            let n = 500
            let done = Recorder<Void>()
            for i in 0..<n {
                w.enqueueOnLoop(bytes("e\(i)"), key: Int64(i), timestamp: 0) { r in
                    if case let .success(id) = r { order.add((i, id)) } else { Issue.record("append \(i) failed: \(r)") }
                    done.add(())
                }
            }
            #expect(await eventually(loop, timeoutMs: 20_000) { done.count == n })
            let got = order.all
            #expect(got.map(\.0) == Array(0..<n), "completions out of append order")
            #expect(got.map(\.1) == (0..<n).map { LogMessageId(segmentId: 0, entryId: Int64($0)) })
            #expect(await w.blocksFlushed >= n / 7)
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == (0..<n).map { "e\($0)" })
        }
    }

    @Test func groupCommitBatchesQuickAppendsOnTheInterval() async throws {
        try await withWAL(.memory) { env in
            let loop = env.loop
            let config = WALConfig.test.with {
                $0.flushWhenIdle = false
                $0.flushIntervalMs = 50
            }
            let log = try await env.client(config).createLog("group")
            let w = try await log.openWriter()
            let start = Clock.monotonicMillis()
            let ids = try await withThrowingTaskGroup(of: LogMessageId.self) { group in
                for i in 0..<100 { group.addTask(executorPreference: loop) { try await w.append(bytes("g\(i)")) } }
                var out: [LogMessageId] = []
                for try await id in group { out.append(id) }
                return out
            }
            let elapsed = Clock.monotonicMillis() - start
            #expect(Set(ids).count == 100)
            let blocks = await w.blocksFlushed
            #expect(blocks >= 1 && blocks <= 3, "100 quick appends took \(blocks) blocks")
            #expect(elapsed >= 40, "the interval trigger cannot fire before ~50 ms (took \(elapsed) ms)")
            try await w.close()
        }
    }

    @Test func flushBytesAndMaxEntriesTriggerWithoutTheTimer() async throws {
        try await withWAL(.memory) { env in
            let loop = env.loop
            // The interval is a minute: only the size triggers can flush within the test.
            let base = WALConfig.test.with {
                $0.flushWhenIdle = false
                $0.flushIntervalMs = 60_000
            }
            let payload = ByteBuffer(bytes: [UInt8](repeating: 7, count: 100))

            // flushBytes = 1000: ten 100-byte entries make one block at once; the 11th waits.
            let bytesLog = try await env.client(base.with { $0.flushBytes = 1000 }).createLog("bytes")
            let w1 = try await bytesLog.openWriter()
            let acked1 = Recorder<LogMessageId>()
            for _ in 0..<11 {
                Task(executorPreference: loop) { acked1.add(try await w1.append(payload)) }
            }
            #expect(await eventually(loop, timeoutMs: 3000) { acked1.count == 10 })
            await loop.sleep(ms: 100)
            #expect(acked1.count == 10)
            #expect(await w1.blocksFlushed == 1)
            try await w1.close()  // close flushes the rest
            #expect(await eventually(loop) { acked1.count == 11 })
            #expect(await w1.blocksFlushed == 2)

            // flushMaxEntries = 10: 25 appends give two full blocks at once; 5 wait for close.
            let countLog = try await env.client(base.with { $0.flushMaxEntries = 10 }).createLog("count")
            let w2 = try await countLog.openWriter()
            let acked2 = Recorder<LogMessageId>()
            for _ in 0..<25 {
                Task(executorPreference: loop) { acked2.add(try await w2.append(bytes("x"))) }
            }
            #expect(await eventually(loop, timeoutMs: 3000) { acked2.count == 20 })
            await loop.sleep(ms: 100)
            #expect(acked2.count == 20)
            #expect(await w2.blocksFlushed == 2)
            try await w2.close()
            #expect(await eventually(loop) { acked2.count == 25 })
            #expect(try await readAll(countLog).count == 25)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func rollsBySizeAndReaderCrossesSegments(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with { $0.segmentMaxBytes = 1000 }
            let log = try await env.client(config).createLog("rolling")
            let w = try await log.openWriter()
            // Exactly 100 bytes each.
            let payload = { (i: Int) in ByteBuffer(bytes: Array(String(format: "entry-%03d-", i).utf8) + [UInt8](repeating: UInt8(i), count: 90)) }
            var ids: [LogMessageId] = []
            for i in 0..<35 { ids.append(try await w.append(payload(i))) }
            // 100-byte entries flushed one by one: the segment rolls once it reaches 1000 bytes.
            #expect(ids.map(\.segmentId) == (0..<35).map { Int64($0 / 10) })
            #expect(ids.map(\.entryId) == (0..<35).map { Int64($0 % 10) })
            var metas = try await log.segmentMetas()
            #expect(metas.map(\.value.state) == [.completed, .completed, .completed, .active])
            #expect(metas.prefix(3).allSatisfy { $0.value.lastEntryId == 9 })
            let got = try await readAll(log)
            #expect(got.map(\.id) == ids)
            #expect(got.map(\.payload) == (0..<35).map(payload))
            try await w.close()
            metas = try await log.segmentMetas()
            #expect(metas.map(\.value.state) == [.completed, .completed, .completed, .completed])
            #expect(metas.last?.value.lastEntryId == 4)
        }
    }

    /// Entries queued while a block is in flight go out together in the next block; that block stops where the
    /// segment is full instead of taking it past its size (before, one block of 3.4 KB filled a 1,000-byte segment).
    @Test func blocksOfQueuedEntriesStopAtTheSegmentBound() async throws {
        try await withWAL(.file) { env in
            let config = WALConfig.test.with { $0.segmentMaxBytes = 1000 }
            let log = try await env.client(config).createLog("bounded")
            let w = try await log.openWriter()
            let ids = try await withThrowingTaskGroup(of: LogMessageId.self) { group in
                for i in 0..<35 {
                    group.addTask { try await w.append(ByteBuffer(bytes: [UInt8](repeating: UInt8(i), count: 100))) }
                }
                var out: [LogMessageId] = []
                for try await id in group { out.append(id) }
                return out
            }
            #expect(ids.count == 35)
            try await w.close()
            let metas = try await log.segmentMetas()
            #expect(metas.count >= 4, "35 x 100 bytes in segments of 1,000: \(metas.count) segments")
            for m in metas {  // at most 10 entries of 100 bytes each
                #expect(m.value.lastEntryId <= 9, "segment \(m.value.segmentId): entries 0...\(m.value.lastEntryId)")
            }
            #expect(try await readAll(log).count == 35)
        }
    }

    @Test func rollsByAge() async throws {
        try await withWAL(.memory) { env in
            let config = WALConfig.test.with { $0.segmentMaxAgeMs = 150 }
            let log = try await env.client(config).createLog("aging")
            let w = try await log.openWriter()
            let first = try await w.append(bytes("old"))
            #expect(first == LogMessageId(segmentId: 0, entryId: 0))
            await env.loop.sleep(ms: 250)
            let second = try await w.append(bytes("new"))
            #expect(second == LogMessageId(segmentId: 1, entryId: 0), "a segment older than segmentMaxAgeMs must roll")
            #expect(try await log.segmentMetas().first?.value.state == .completed)
            // An empty segment never rolls by age.
            await env.loop.sleep(ms: 50)
            let third = try await w.append(bytes("newer"))
            #expect(third.segmentId == 1)
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == ["old", "new", "newer"])
        }
    }

    @Test func keysThatGoBackwardsAreRejectedNotFatal() async throws {
        try await withWAL(.memory) { env in
            let log = try await env.client().createLog("keys")
            let w = try await log.openWriter()
            _ = try await w.append(bytes("a"), key: 10)
            _ = await expectWoodpeckerError(.invalidArgument) { _ = try await w.append(bytes("b"), key: 9) }
            #expect(try await w.append(bytes("c"), key: 10).entryId == 1)
            try await w.close()
            #expect(try await readAll(log).map { text($0.payload) } == ["a", "c"])
        }
    }
}
