@testable import KafkaBroker
import KafkaProtocol
import Synchronization
import Testing
import WoodpeckerCore
import WoodpeckerIO

/// Fetch responses are built in memory: a broker-wide budget bounds the bytes being assembled at once, and a
/// request's max_bytes is lowered to the broker's fetch.max.bytes.
@Suite(.timeLimit(.minutes(1))) struct FetchMemoryTests {
    @Test func budgetGrantsInArrivalOrderLetsOneOversizedThroughAndTimesOut() async throws {
        let loop = EventLoop(name: "budget-test")
        defer { loop.shutdown() }
        let budget = LoopBudget(limit: 100, loop: loop)
        let order = Mutex<[String]>([])
        func onLoopTask<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> Task<T, Never> {
            Task(executorPreference: loop) { await body() }
        }
        #expect(await onLoopTask { await budget.reserve(60, timeoutMs: 1_000) }.value)
        let b = onLoopTask { let ok = await budget.reserve(50, timeoutMs: 5_000); order.withLock { $0.append("b") }; return ok }
        try await Task.sleep(nanoseconds: 10_000_000)
        let c = onLoopTask { let ok = await budget.reserve(10, timeoutMs: 5_000); order.withLock { $0.append("c") }; return ok }
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(await onLoopTask { budget.used }.value == 60, "b waits for room and c waits behind b (arrival order), though c would fit")
        #expect(await onLoopTask { await budget.reserve(1, timeoutMs: 30) }.value == false, "a waiter past its deadline gets nothing")
        await onLoopTask { budget.release(60) }.value
        let bGranted = await b.value
        let cGranted = await c.value
        #expect(bGranted && cGranted)
        #expect(order.withLock { $0 } == ["b", "c"])
        #expect(await onLoopTask { budget.used == 60 && budget.peak <= 100 }.value)
        await onLoopTask { budget.release(60) }.value
        #expect(await onLoopTask { await budget.reserve(500, timeoutMs: 10) }.value, "an oversized reservation goes through alone")
        #expect(await onLoopTask { budget.release(500); return budget.used }.value == 0)
    }

    /// Fetches reserve from the budget, a budget of one response still serves several fetches at once, and a
    /// request's max_bytes is lowered to fetch.max.bytes. (How the budget bounds overlapping reservations is the
    /// test above: fetches from memory rarely overlap here.)
    @Test func fetchesReserveFromTheBudgetAndMaxBytesIsCapped() async throws {
        try await withBroker({ $0.fetchResponseBudgetBytes = 1 << 20; $0.fetchMaxBytes = 1 << 20 }) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("big", partitions: 4).errorCode == 0)
            for p in Int32(0)..<4 {
                for i in 0..<4 {
                    let r = try await c.produce("big", partition: p, makeBatch(count: 1, prefix: "p\(p)-\(i)", valueSize: 200 << 10).bytes)
                    #expect(r.errorCode == 0)
                }
            }
            // Four fetches at once, each asking for up to 50 MiB (lowered to fetch.max.bytes, 1 MiB).
            var readers: [TestClient] = []
            for _ in 0..<4 { readers.append(try await b.connect()) }
            let results = try await withThrowingTaskGroup(of: Int.self) { group in
                for (p, r) in readers.enumerated() {
                    group.addTask {
                        let data = try await r.fetch("big", partition: Int32(p), offset: 0, maxWaitMs: 5_000, maxBytes: 50 << 20)
                        #expect(data.errorCode == 0)
                        return try batches(data.records).count
                    }
                }
                var counts: [Int] = []
                for try await n in group { counts.append(n) }
                return counts
            }
            #expect(results.count == 4 && results.allSatisfy { $0 >= 4 }, "every fetch got its partition's 4 batches: \(results)")
            let peak = try await onLoop(b.loop) { b.broker.fetchMemory.peak }
            #expect(peak > 0 && peak <= 1 << 20, "fetch responses being built at once: \(peak) bytes against a 1 MiB budget")
            // A single fetch asking for more than fetch.max.bytes gets at most about that much (1.6 MiB are there).
            for i in 4..<8 {
                let r = try await c.produce("big", partition: 0, makeBatch(count: 1, prefix: "p0-\(i)", valueSize: 200 << 10).bytes)
                #expect(r.errorCode == 0)
            }
            let one = try await c.fetch("big", partition: 0, offset: 0, maxBytes: 50 << 20)
            let got = one.records?.readableBytes ?? 0
            #expect(got > 0 && got <= 1 << 20, "\(got) bytes returned with fetch.max.bytes 1 MiB")
            for r in readers { await r.close() }
            await c.close()
        }
    }

    /// A consumer that pipelines fetches and reads its socket slowly: the budget used to be released once a response
    /// was built, so every response it asked for piled up in the broker's write queue (heaptrack: 2.6 GB of fetch
    /// response frames at the peak of a catch-up consume). Now a response holds its share until it is written.
    @Test func unsentResponsesStayWithinTheBudget() async throws {
        try await withBroker({ $0.fetchResponseBudgetBytes = 1 << 20; $0.fetchMaxBytes = 1 << 20 }) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("slow").errorCode == 0)
            for i in 0..<5 {
                let r = try await c.produce("slow", makeBatch(count: 1, prefix: "s\(i)", valueSize: 200 << 10).bytes)
                #expect(r.errorCode == 0)
            }
            // Stops reading its socket after 2 MiB; the kernel's loopback buffers take a few MiB more.
            let slow = try await b.connect(inboxBytes: 2 << 20)
            let fetches = 40  // about 1 MiB each: 40 MiB asked for
            // All in one write, so that the broker has read every request before the first response fills the socket
            // (reading stops only while the connection is not writable; requests already read are all served).
            var ids: [Int32] = []
            var requests = ByteBuffer()
            for _ in 0..<fetches {
                let id = slow.correlationId()
                ids.append(id)
                requests.writeBuffer(KafkaHeaders.requestFrame(slow.fetchRequest("slow", offset: 0, maxWaitMs: 100, maxBytes: 1 << 20),
                                                               version: 12, correlationId: id, clientId: "slow"))
            }
            await slow.writeNoWait(requests)
            var queued = 0
            for _ in 0..<30 {
                try await Task.sleep(nanoseconds: 100_000_000)
                queued = max(queued, try await onLoop(b.loop) { b.broker.pendingResponseBytes() })
            }
            // What the broker holds for the socket: the budget plus one response that went out alone.
            #expect(queued <= (2 << 20) + (64 << 10), "\(queued) response bytes queued in the broker with a 1 MiB budget")
            // Every fetch is answered, with records or (starved) without, and the budget is given back.
            var withRecords = 0
            for id in ids {
                let r = try await slow.read(FetchResponse.self, version: 12, correlationId: id)
                let p = try #require(r.responses.first?.partitions.first)
                #expect(p.errorCode == 0)
                if try batches(p.records).count > 0 { withRecords += 1 }
            }
            #expect(withRecords > 0)
            var used = -1
            for _ in 0..<50 {
                used = try await onLoop(b.loop) { b.broker.fetchMemory.used }
                if used == 0 { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(used == 0, "\(used) bytes of the fetch budget still held after every response was read")
            await slow.close()
            await c.close()
        }
    }

    /// A written response was kept in the connection's slot array until the array was compacted (after 256 more
    /// requests), so a consumer's last few hundred fetch responses stayed in memory after they were sent (heaptrack:
    /// 1.3 GB of response frames at the peak of a catch-up consume with the fetch budget at 256 MiB).
    @Test func writtenResponsesAreNotKept() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("kept").errorCode == 0)
            for i in 0..<5 {
                let r = try await c.produce("kept", makeBatch(count: 1, prefix: "k\(i)", valueSize: 200 << 10).bytes)
                #expect(r.errorCode == 0)
            }
            _ = try await c.fetch("kept", offset: 0, maxBytes: 1 << 20)
            let before = MemoryReleaser.allocatorStats()
            for _ in 0..<40 {
                let f = try await c.fetch("kept", offset: 0, maxBytes: 1 << 20)
                #expect(try batches(f.records).count == 5)
            }
            let after = MemoryReleaser.allocatorStats()
            let grown = (after.used + after.mapped) - (before.used + before.mapped)
            // 40 responses of 1 MiB were sent; none of them may stay.
            #expect(grown < 16 << 20, "\(grown >> 20) MiB more in use after 40 fetches of 1 MiB")
            await c.close()
        }
    }
}
