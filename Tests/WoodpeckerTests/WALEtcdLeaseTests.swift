import Foundation
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata

/// Writer leases and fencing of the WAL on a real etcd (started per test on loopback ports).
@Suite(.serialized, .enabled(if: WALEtcdServer.enabled, WALEtcdServer.skipReason))
struct WALEtcdLeaseTests {
    /// Appends `payload` and records it when acknowledged; returns the failure instead of throwing.
    static func append(_ w: LogWriter, _ payload: String, into acked: inout [(LogMessageId, String)]) async -> WoodpeckerError? {
        do {
            acked.append((try await w.append(bytes(payload)), payload))
            return nil
        } catch let e as WoodpeckerError {
            return e
        } catch {
            return WoodpeckerError(.internalError, "\(error)")
        }
    }

    /// Every acknowledged entry is in the log with its payload.
    static func expectAllReadable(_ log: Log, _ acked: [(LogMessageId, String)],
                                  sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let entries = try await readAll(log)
        expectDenseOrder(entries, sourceLocation: sourceLocation)
        var byId: [LogMessageId: String] = [:]
        for e in entries { byId[e.id] = text(e.payload) }
        let missing = acked.filter { byId[$0.0] != $0.1 }
        #expect(missing.isEmpty, "acknowledged but not read back: \(missing.prefix(5)) of \(missing.count)",
                sourceLocation: sourceLocation)
    }

    /// A writer holds a lease with its lock key attached; revoking the lease from another client makes the
    /// writer's appends fail with `.lockLost` within one renewal interval (TTL/3) plus a request, for good; a new
    /// writer takes over and reads back everything acknowledged.
    @Test func revokedLeaseStopsTheWriter() async throws {
        try await withEtcdWAL { env in
            let log = try await env.client(ttl: 3).createLog("revoke")
            let w = try await log.openWriter()
            let lease = await w.lease
            #expect(lease != 0)
            #expect(try await log.writerLock()?.lease == lease, "the lock key is attached to the writer's lease")
            var acked: [(LogMessageId, String)] = []
            for i in 0..<20 {
                if let e = await Self.append(w, "a\(i)", into: &acked) { Issue.record("healthy append failed: \(e)") }
            }
            try await env.store().revokeLease(lease)
            #expect(try await log.writerLock() == nil, "revoking the lease deleted the lock key")
            let revokedAt = Clock.monotonicMillis()
            var failure: WoodpeckerError?
            var i = 0
            while failure == nil && Clock.monotonicMillis() - revokedAt < 10_000 {
                failure = await Self.append(w, "b\(i)", into: &acked)
                i += 1
                await env.loop.sleep(ms: 20)
            }
            let failedAfter = Clock.monotonicMillis() - revokedAt
            #expect(failure?.code == .lockLost, "\(String(describing: failure))")
            #expect(failure?.message.contains("lease \(lease) lost") == true && failure?.message.contains("reopen the writer") == true,
                    "\(String(describing: failure))")
            #expect(failedAfter < 3_000, "noticed within a renewal interval (1 s) plus a request: \(failedAfter) ms")
            // It stays stopped.
            let again = await expectWoodpeckerError(.lockLost) { _ = try await w.append(bytes("later")) }
            #expect(again?.message.contains("lease") == true)
            #expect(await w.isWritable == false)
            try await w.close()

            let log2 = try await env.client(ttl: 3).openLog("revoke")
            let w2 = try await log2.openWriter()
            #expect(try await log2.writerLock()?.lease == (await w2.lease))
            if let e = await Self.append(w2, "c0", into: &acked) { Issue.record("new writer failed: \(e)") }
            try await Self.expectAllReadable(log2, acked)
            try await w2.close()
            #expect(try await log2.writerLock() == nil, "close revokes the lease and with it the lock key")
        }
    }

    /// etcd frozen (SIGSTOP) for longer than the TTL: appends keep being acknowledged while the lease is surely
    /// valid (blocks go to storage, not etcd), then the writer stops with `.lockLost` about TTL after its last
    /// renewal and acknowledges nothing more. After SIGCONT a new writer opens and every acknowledged entry reads
    /// back; the old lease is gone.
    @Test func frozenEtcdLongerThanTheTTLStopsTheWriter() async throws {
        try await withEtcdWAL { env in
            let ttlMs: UInt64 = 2_000
            let log = try await env.client(ttl: 2).createLog("frozen")
            let w = try await log.openWriter()
            let lease = await w.lease
            var acked: [(LogMessageId, String)] = []
            for i in 0..<10 { _ = await Self.append(w, "a\(i)", into: &acked) }
            #expect(acked.count == 10)
            env.server.pause()
            let pausedAt = Clock.monotonicMillis()
            var failure: WoodpeckerError?
            var ackedWhilePaused = 0
            var lastAckAt = pausedAt
            var i = 0
            while failure == nil && Clock.monotonicMillis() - pausedAt < 10_000 {
                failure = await Self.append(w, "p\(i)", into: &acked)
                if failure == nil {
                    ackedWhilePaused += 1
                    lastAckAt = Clock.monotonicMillis()
                }
                i += 1
                await env.loop.sleep(ms: 20)
            }
            let failedAt = Clock.monotonicMillis()
            #expect(failure?.code == .lockLost && failure?.message.contains("not renewed within its TTL") == true,
                    "\(String(describing: failure))")
            #expect(ackedWhilePaused > 0, "appends inside the segment continue while etcd is frozen")
            // The last renewal was sent before the freeze, so every ack happened before freeze + TTL; `lastAckAt` is
            // taken when the appending task resumes, a little later.
            #expect(lastAckAt - pausedAt < ttlMs + 300, "nothing acknowledged past the lease's TTL: last ack seen \(lastAckAt - pausedAt) ms after the freeze")
            #expect(failedAt - pausedAt <= ttlMs + 1_000, "stopped \(failedAt - pausedAt) ms after the freeze")
            #expect(failedAt - pausedAt >= ttlMs / 3, "not before the lease could have lapsed")
            // Still stopped however long etcd stays frozen.
            await env.loop.sleep(ms: 1_000)
            _ = await expectWoodpeckerError(.lockLost) { _ = try await w.append(bytes("later")) }
            env.server.resume()
            try await w.close()

            let log2 = try await env.client(ttl: 2).openLog("frozen")
            let w2 = try await log2.openWriter()
            if let e = await Self.append(w2, "n0", into: &acked) { Issue.record("new writer failed: \(e)") }
            try await Self.expectAllReadable(log2, acked)
            let store = env.store()
            let gone = try await eventually(env.loop, timeoutMs: 5_000) { try await store.leaseTimeToLive(lease) == nil }
            #expect(gone, "the old lease expired once etcd ran again")
            try await w2.close()
        }
    }

    /// A healthy writer keeps its lease across several TTLs by renewing it in the background.
    @Test func keepAliveHoldsAHealthyWriterPastSeveralTTLs() async throws {
        try await withEtcdWAL { env in
            let log = try await env.client(ttl: 2).createLog("alive")
            let w = try await log.openWriter()
            let lease = await w.lease
            var acked: [(LogMessageId, String)] = []
            let start = Clock.monotonicMillis()
            var i = 0
            while Clock.monotonicMillis() - start < 7_000 {
                if let e = await Self.append(w, "k\(i)", into: &acked) {
                    Issue.record("append \(i) failed after \(Clock.monotonicMillis() - start) ms: \(e)")
                    break
                }
                i += 1
                await env.loop.sleep(ms: 100)
            }
            // Idle for more than a TTL: renewals do not depend on appends.
            await env.loop.sleep(ms: 2_500)
            #expect(await w.isWritable)
            let ttl = try await env.store().leaseTimeToLive(lease)
            #expect(ttl != nil && ttl! > 0, "the lease is alive after 9.5 s with a 2 s TTL: \(String(describing: ttl))")
            if let e = await Self.append(w, "last", into: &acked) { Issue.record("append after idle failed: \(e)") }
            try await w.close()
            #expect(try await env.store().leaseTimeToLive(lease) == nil, "close revoked the lease")
            try await Self.expectAllReadable(log, acked)
        }
    }

    /// Two clients (as two processes would be) open writers of one log on etcd: the newer takes the lock and
    /// fences the older, whose next append fails with `.lockLost`; everything either acknowledged reads back.
    @Test func newerWriterFencesTheOlder() async throws {
        try await withEtcdWAL { env in
            let log1 = try await env.client().createLog("two")
            let w1 = try await log1.openWriter()
            var acked: [(LogMessageId, String)] = []
            for i in 0..<10 { _ = await Self.append(w1, "one\(i)", into: &acked) }
            let log2 = try await env.client().openLog("two")
            let w2 = try await log2.openWriter()
            #expect(try await log2.writerLock()?.lease == (await w2.lease))
            let e = await expectWoodpeckerError(.lockLost) { _ = try await w1.append(bytes("late")) }
            #expect(e?.message.contains("fenced") == true, "\(String(describing: e))")
            for i in 0..<10 { _ = await Self.append(w2, "two\(i)", into: &acked) }
            #expect(acked.count == 20)
            try await w1.close()
            #expect(try await log2.writerLock()?.lease == (await w2.lease), "closing the fenced writer left the new lock alone")
            try await Self.expectAllReadable(log2, acked)
            try await w2.close()
        }
    }
}

/// Bad metadata on etcd: each case fails with a clear error naming the key and the endpoint, never silently.
@Suite(.serialized, .enabled(if: WALEtcdServer.enabled, WALEtcdServer.skipReason))
struct WALEtcdBadInputTests {
    @Test func corruptValuesAndForeignLayoutNameKeyAndEndpoint() async throws {
        try await withEtcdWAL { env in
            let store = env.store()
            let client = env.client(store: store)
            let root = env.prefix + "woodpecker"
            // A log record that is not JSON.
            try await store.put("\(root)/logs/garbled", Array("not json".utf8))
            var e = await expectWoodpeckerError(.metadataCorrupted) { _ = try await client.openLog("garbled") }
            #expect(e?.message.contains("\(root)/logs/garbled") == true && e?.message.contains(env.server.endpoint) == true,
                    "\(String(describing: e))")
            // A valid log record of another log (a foreign layout under our prefix).
            try await store.put("\(root)/logs/elsewhere",
                                Array(#"{"createTimeMs":1,"logId":7,"name":"other","truncatedEntryId":-1,"truncatedSegmentId":-1}"#.utf8))
            e = await expectWoodpeckerError(.metadataCorrupted) { _ = try await client.openLog("elsewhere") }
            #expect(e?.message.contains("\(root)/logs/elsewhere") == true && e?.message.contains(env.server.endpoint) == true,
                    "\(String(describing: e))")
            // A segment key that is not in the layout, holding a valid segment record.
            let log = try await client.createLog("segs")
            let foreignKey = "\(root)/logs/segs/segments/7"
            try await store.put(foreignKey, Array(#"{"createTimeMs":1,"segmentId":3,"state":0}"#.utf8))
            e = await expectWoodpeckerError(.metadataCorrupted) { _ = try await log.openWriter() }
            #expect(e?.message.contains(foreignKey) == true && e?.message.contains(env.server.endpoint) == true,
                    "\(String(describing: e))")
            #expect(try await log.writerLock() == nil, "a writer that failed to open released its lease and lock")
            // A corrupt segment record.
            try await store.delete(foreignKey)
            let segKey = "\(root)/logs/segs/segments/0000000000000000000"
            try await store.put(segKey, Array("{\"segmentId\":".utf8))
            e = await expectWoodpeckerError(.metadataCorrupted) { _ = try await log.segmentMetas() }
            #expect(e?.message.contains(segKey) == true && e?.message.contains(env.server.endpoint) == true,
                    "\(String(describing: e))")
            // A log id counter that is not a number would hand out ids in use: refused.
            try await store.put("\(root)/logidgen", Array("seven".utf8))
            e = await expectWoodpeckerError(.metadataCorrupted) { _ = try await client.createLog("fresh") }
            #expect(e?.message.contains("\(root)/logidgen") == true && e?.message.contains(env.server.endpoint) == true,
                    "\(String(describing: e))")
            #expect(try await client.logExists("fresh") == false)
        }
    }

    /// No etcd at the endpoint: WAL calls fail fast with a retryable error naming the endpoint and the key.
    @Test func unreachableEtcdIsRetryableAndNamed() async throws {
        try await withEtcdWAL { env in
            let dead = "http://127.0.0.1:\(try walFreePort())"
            let client = env.client(store: env.store(endpoint: dead))
            let start = Clock.monotonicMillis()
            let e = await expectWoodpeckerError(.metadataUnavailable) { _ = try await client.openOrCreateLog("x") }
            #expect(e?.isRetryable == true)
            #expect(e?.message.contains(dead) == true && e?.message.contains(env.prefix + "woodpecker/logs/x") == true,
                    "\(String(describing: e))")
            #expect(Clock.monotonicMillis() - start < 5_000)
        }
    }
}
