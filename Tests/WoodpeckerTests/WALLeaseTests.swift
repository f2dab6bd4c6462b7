import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata

/// Writer leases on the embedded metadata store (the same code path as on etcd).
@Suite struct WALLeaseTests {
    /// Revoking the writer's lease on the embedded store stops the writer within a renewal interval; a new
    /// writer then opens and reads back everything acknowledged.
    @Test func revokedLeaseStopsTheWriterOnTheEmbeddedStore() async throws {
        try await withWAL(.segments) { env in
            let config = WALConfig.test.with { $0.writerLeaseTTLSeconds = 3 }
            let log = try await env.client(config).createLog("lease")
            let w = try await log.openWriter()
            let lease = await w.lease
            #expect(lease != 0)
            let holder = try await log.writerLock()
            #expect(holder?.lease == lease)
            var acked: [(LogMessageId, String)] = []
            for i in 0..<5 { acked.append((try await w.append(bytes("e\(i)")), "e\(i)")) }
            try await env.metadata.revokeLease(lease)
            let stopped = await eventually(env.loop, timeoutMs: 3_000) { await !w.isWritable }
            #expect(stopped, "the writer noticed the revoked lease within a renewal interval (1 s)")
            let e = await expectWoodpeckerError(.lockLost) { _ = try await w.append(bytes("after")) }
            #expect(e?.message.contains("expired or was revoked") == true, "\(String(describing: e))")
            #expect(await w.lostLease)
            try await w.close()
            let w2 = try await log.openWriter()
            acked.append((try await w2.append(bytes("new")), "new"))
            let got = try await readAll(log)
            #expect(got.map { text($0.payload) } == acked.map(\.1))
            #expect(got.map(\.id) == acked.map(\.0))
            try await w2.close()
        }
    }

    /// With `writerLeaseTTLSeconds = 0` a writer holds no lease and no lock key (fencing still works by segments).
    @Test func noLeaseWhenTheTTLIsZero() async throws {
        try await withWAL(.memory) { env in
            let config = WALConfig.test.with { $0.writerLeaseTTLSeconds = 0 }
            let log = try await env.client(config).createLog("nolease")
            let w = try await log.openWriter()
            #expect(await w.lease == 0)
            #expect(try await log.writerLock() == nil)
            _ = try await w.append(bytes("x"))
            let w2 = try await env.client(config).openLog("nolease").openWriter()
            _ = await expectWoodpeckerError(.lockLost) { _ = try await w.append(bytes("y")) }
            #expect(await w.lostLease == false, "fenced by a newer writer, not a lease lapse")
            try await w2.close()
            try await w.close()
        }
    }

    /// Deleting a log removes its writer lock with it.
    @Test func deleteLogRemovesTheWriterLock() async throws {
        try await withWAL(.memory) { env in
            let client = env.client()
            let log = try await client.createLog("gone")
            let w = try await log.openWriter()
            _ = try await w.append(bytes("x"))
            #expect(try await log.writerLock() != nil)
            try await client.deleteLog("gone")
            #expect(try await env.metadata.range(prefix: "woodpecker/logs/gone").isEmpty, "no key of the log is left")
            try? await w.close()
        }
    }
}
