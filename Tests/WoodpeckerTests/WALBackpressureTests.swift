import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

@Suite struct WALBackpressureTests {
    /// With a slow store, appends wait for buffer space and the writer never holds more than `writerBufferBytes`.
    @Test(arguments: StoreKind.objectLayouts)  // slows puts with a store wrapper
    func bufferedBytesStayWithinTheBound(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let bound = 10_000
            let config = WALConfig.test.with {
                $0.writerBufferBytes = bound
                $0.flushBytes = 3000
                $0.maxInFlightBlocks = 4
                $0.appendWaitTimeoutMs = 30_000
            }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await client.createLog("bounded")
            let w = try await log.openWriter()
            faults.setFaults { $0.putDelayMs = { _ in 30 } }
            let payload = ByteBuffer(bytes: [UInt8](repeating: 3, count: 1000))
            let peak = Recorder<Int>()
            let sampler = Task(executorPreference: loop) {
                while !Task.isCancelled {
                    peak.add(await w.bufferedBytes)
                    await loop.sleep(ms: 1)
                }
            }
            let start = Clock.monotonicMillis()
            let ids = try await withThrowingTaskGroup(of: [LogMessageId].self) { group in
                for _ in 0..<40 {
                    group.addTask(executorPreference: loop) {
                        var out: [LogMessageId] = []
                        for _ in 0..<5 { out.append(try await w.append(payload)) }
                        return out
                    }
                }
                var all: [LogMessageId] = []
                for try await r in group { all += r }
                return all
            }
            sampler.cancel()
            let elapsed = Clock.monotonicMillis() - start
            #expect(ids.count == 200 && Set(ids).count == 200)
            // 200 KB through a 10 KB window of 30 ms puts cannot finish in less than ~20 rounds.
            #expect(elapsed >= 300, "appends did not wait for space (\(elapsed) ms)")
            let peakBuffered = await w.peakBufferedBytes
            #expect(peakBuffered <= bound, "writer buffered \(peakBuffered) bytes, bound \(bound)")
            #expect(peak.all.max() ?? 0 <= bound)
            #expect(faults.peakRunningPutBytes <= bound + 4 * 200, "encoded bytes in flight \(faults.peakRunningPutBytes)")
            try await w.close()
            #expect(try await readAll(log).count == 200)
        }
    }

    @Test func appendsFailWithBufferFullAfterTheWaitTimeout() async throws {
        try await withWAL(.memory) { env in
            let loop = env.loop
            let config = WALConfig.test.with {
                $0.writerBufferBytes = 2000
                $0.appendWaitTimeoutMs = 20
            }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await client.createLog("full")
            let w = try await log.openWriter()
            faults.setFaults { $0.putDelayMs = { _ in 400 } }
            let payload = ByteBuffer(bytes: [UInt8](repeating: 3, count: 1000))
            let first = Task(executorPreference: loop) { try await w.append(payload) }
            let second = Task(executorPreference: loop) { try await w.append(payload) }
            await loop.sleep(ms: 10)
            let t0 = Clock.monotonicMillis()
            let e = await expectWoodpeckerError(.bufferFull) { _ = try await w.append(payload) }
            #expect(e?.isRetryable == true)
            #expect(Clock.monotonicMillis() - t0 < 300, "bufferFull must come after appendWaitTimeoutMs, not the put")
            #expect(try await first.value == LogMessageId(segmentId: 0, entryId: 0))
            #expect(try await second.value == LogMessageId(segmentId: 0, entryId: 1))
            faults.setFaults { $0.putDelayMs = { _ in 0 } }
            #expect(try await w.append(payload) == LogMessageId(segmentId: 0, entryId: 2))
            try await w.close()
            #expect(try await readAll(log).count == 3)
        }
    }

    /// A full disk fails appends with a retryable `.diskFull`; acknowledged entries stay; once the store accepts
    /// writes again the same writer continues (in a new segment) without being reopened.
    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func diskFullFailsAppendsCleanlyAndTheWriterRecovers(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let client = env.client { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await client.createLog("diskfull")
            let w = try await log.openWriter()
            var acked: [LogMessageId: String] = [:]
            for i in 0..<10 { acked[try await w.append(bytes("ok\(i)"))] = "ok\(i)" }

            let full = { @Sendable (key: String) -> WoodpeckerError? in
                WoodpeckerError(.diskFull, "\(key): No space left on device; free disk space and retry")
            }
            faults.setFaults { $0.putError = full }
            let e = await expectWoodpeckerError(.diskFull) { _ = try await w.append(bytes("lost-0")) }
            #expect(e?.isRetryable == true)
            // While the store stays full, every append fails (after the writer's bounded retries), retryably.
            for i in 1..<3 {
                do {
                    _ = try await w.append(bytes("lost-\(i)"))
                    Issue.record("append succeeded on a full disk")
                } catch let e as WoodpeckerError {
                    #expect(e.isRetryable, "\(e)")
                }
            }
            faults.setFaults { $0.putError = { _ in nil } }
            var later: [LogMessageId] = []
            for i in 0..<5 {
                let id = try await w.append(bytes("later\(i)"))
                acked[id] = "later\(i)"
                later.append(id)
            }
            #expect(later.allSatisfy { $0.segmentId > 0 }, "the writer continues in a new segment: \(later)")
            try await w.close()

            try await env.restart()
            let got = try await readAll(try await env.client().openLog("diskfull"))
            expectDenseOrder(got)
            #expect(got.count == acked.count)
            for g in got { #expect(acked[g.id] == text(g.payload), "\(g.id) holds \(text(g.payload))") }
        }
    }
}

/// Regression: taken entries stayed in the writer's queue array until 1024 of them had gone by, so a broker writing
/// 1 MB batches held up to 1 GB of acknowledged payloads (RSS grew with the data).
@Suite struct WALQueueReleaseTests {
    @Test func acknowledgedEntriesAreNotRetained() async throws {
        try await withWAL(.memory) { env in
            let log = try await env.client().createLog("release")
            let w = try await log.openWriter()
            for i in 0..<50 {
                _ = try await w.append(ByteBuffer(bytes: [UInt8](repeating: UInt8(i), count: 10_000)))
            }
            #expect(await w.retainedQueueEntries == 0)
        }
    }
}
