import Foundation
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

@Suite struct WALReaderTests {
    /// 30 entries of 100 bytes over three segments, key = 10*i, timestamp = 1000 + 5*i.
    static func fill(_ log: Log) async throws -> LogWriter {
        let w = try await log.openWriter()
        for i in 0..<30 {
            _ = try await w.append(ByteBuffer(bytes: Array(String(format: "r%02d-", i).utf8) + [UInt8](repeating: 1, count: 96)),
                                   key: Int64(10 * i), timestamp: 1000 + Int64(5 * i))
        }
        return w
    }

    static func payloadIndex(_ e: LogEntry) -> Int {
        Int(text(e.payload).split(separator: "-").first!.dropFirst())!
    }

    @Test(arguments: StoreKind.allCases)
    func readersStartAtEveryKindOfPosition(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let config = WALConfig.test.with { $0.segmentMaxBytes = 1000 }
            let log = try await env.client(config).createLog("positions")
            let w = try await Self.fill(log)
            // Both the writer's process (tail cache, active block list) and a cold client (footers, probes).
            for l in [log, try await env.client(config).openLog("positions")] {
                let all = try await readAll(l)
                #expect(all.map(Self.payloadIndex) == Array(0..<30))
                #expect(all.map(\.id.segmentId) == (0..<30).map { Int64($0 / 10) })

                #expect(try await readAll(l, from: .id(LogMessageId(segmentId: 1, entryId: 3))).map(Self.payloadIndex) == Array(13..<30))
                #expect(try await readAll(l, from: .key(125)).map(Self.payloadIndex) == Array(13..<30))
                #expect(try await readAll(l, from: .key(130)).map(Self.payloadIndex) == Array(13..<30))
                #expect(try await readAll(l, from: .key(0)).map(Self.payloadIndex) == Array(0..<30))
                #expect(try await readAll(l, from: .timestamp(1052)).map(Self.payloadIndex) == Array(11..<30))
                #expect(try await readAll(l, from: .timestamp(1000)).map(Self.payloadIndex) == Array(0..<30))
                #expect(try await readAll(l, from: .latest).isEmpty)
                #expect(try await readAll(l, from: .key(10_000)).isEmpty)
                #expect(try await readAll(l, from: .timestamp(99_999)).isEmpty)
            }
            // Readers waiting at the tail (latest, key and time past the end) get the next append.
            let latest = try await log.openReader(from: .latest)
            let byKey = try await log.openReader(from: .key(10_000))
            let byTime = try await log.openReader(from: .timestamp(99_999))
            let id = try await w.append(bytes("tail"), key: 10_000, timestamp: 100_000)
            for r in [latest, byKey, byTime] {
                let e = try await r.readNext(waitMs: 2000)
                #expect(e.id == id && text(e.payload) == "tail")
                await r.close()
            }
            try await w.close()
        }
    }

    /// A reader waiting in `next(waitMs:)` is woken by an in-process append, not by polling (the poll interval is
    /// set to a minute), and never returns an entry that is not yet acknowledged.
    @Test func tailReaderIsWokenByAppends() async throws {
        try await withWAL(.memory) { env in
            let loop = env.loop
            let config = WALConfig.test.with { $0.crossProcessPollMs = 60_000 }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await client.createLog("tail")
            let w = try await log.openWriter()
            _ = try await w.append(bytes("first"))
            let r = try await log.openReader(from: .latest)
            for round in 0..<3 {
                let waiting = Task(executorPreference: loop) { () -> ([LogEntry], UInt64) in
                    let got = try await r.next(waitMs: 5000)
                    return (got, Clock.monotonicMillis())
                }
                await loop.sleep(ms: 100)
                let appendedAt = Clock.monotonicMillis()
                let id = try await w.append(bytes("round\(round)"))
                let (got, returnedAt) = try await waiting.value
                #expect(got.map(\.id) == [id])
                #expect(got.map { text($0.payload) } == ["round\(round)"])
                #expect(returnedAt - appendedAt < 300, "reader returned \(returnedAt - appendedAt) ms after the append")
            }
            // Slow storage: while the block is in flight (not acknowledged), the reader returns nothing.
            faults.setFaults { $0.putDelayMs = { _ in 300 } }
            let pending = Task(executorPreference: loop) { try await w.append(bytes("slow")) }
            await loop.sleep(ms: 100)
            #expect(try await r.next(waitMs: 0).isEmpty)
            let slowId = try await pending.value
            #expect(try await r.next(waitMs: 1000).map(\.id) == [slowId])
            await r.close()
            try await w.close()
        }
    }

    /// Block 1 lands before block 0: no reader (same process or another client) returns block 1 first.
    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func readersNeverPassAGapOrTheLastAcknowledgedEntry(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let loop = env.loop
            let config = WALConfig.test.with {
                $0.flushMaxEntries = 1
                $0.crossProcessPollMs = 10
            }
            let client = env.client(config) { FaultStore($0, loop: loop) }
            let faults = client.store as! FaultStore
            let log = try await client.createLog("gap")
            let w = try await log.openWriter()
            let other = try await env.client(config).openLog("gap")
            let local = try await log.openReader(from: .earliest)
            let remote = try await other.openReader(from: .earliest)
            faults.setFaults { $0.putDelayMs = { key in key.hasSuffix("/0.blk") ? 400 : 0 } }
            let a0 = Task(executorPreference: loop) { try await w.append(bytes("zero")) }
            let a1 = Task(executorPreference: loop) { try await w.append(bytes("one")) }
            #expect(try await eventually(loop) { try await env.store.head("\(log.logId)/0/1.blk") != nil })
            #expect(try await local.next(waitMs: 50).isEmpty)
            #expect(try await remote.next(waitMs: 50).isEmpty)
            _ = try await a0.value
            _ = try await a1.value
            #expect(try await local.next(waitMs: 1000).map { text($0.payload) } == ["zero", "one"])
            var remoteGot: [String] = []
            _ = try await eventually(loop) {
                remoteGot += try await remote.next(waitMs: 0).map { text($0.payload) }
                return remoteGot.count >= 2
            }
            #expect(remoteGot == ["zero", "one"])
            await local.close()
            await remote.close()
            try await w.close()
        }
    }

    /// A reader crosses many empty segments (each writer closed without appending) in one call.
    @Test func readerSkipsManyEmptySegments() async throws {
        try await withWAL(.memory) { env in
            let log = try await env.client().createLog("empties")
            let w0 = try await log.openWriter()
            _ = try await w0.append(bytes("before"))
            try await w0.close()
            for _ in 0..<100 { try await log.openWriter().close() }
            let w = try await log.openWriter()
            _ = try await w.append(bytes("after"))
            try await w.close()
            #expect(try await log.segmentMetas().count == 102)
            let r = try await log.openReader(from: .earliest)
            #expect(try await r.next(waitMs: 0).map { text($0.payload) } == ["before"])
            #expect(try await r.next(waitMs: 0).map { text($0.payload) } == ["after"])
            await r.close()
        }
    }
}
