import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerMetadata

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

private func journalFiles(_ dir: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("journal-") }.sorted()
}

/// Everything a client can observe, for before/after comparisons.
private func dump(_ s: EmbeddedMetadataStore) async throws -> ([KeyValue], Int64) {
    (try await s.range(prefix: ""), await s.currentRevision)
}

@Suite struct EmbeddedMetadataStoreTests {
    @Test func emptyStoreStartsAtRevisionOne() async throws {
        let s = EmbeddedMetadataStore.inMemory()
        #expect(await s.currentRevision == 1)
        #expect(try await s.txn(compare: [], then: [.get(key: "k")]).revision == 1)
        #expect(try await s.put("k", b("v")) == 2)
        await s.close()
        await #expect(throws: WoodpeckerError.self) { try await s.get("k") }
    }

    @Test func invalidTransactionsAreRejectedWithoutWriting() async throws {
        let s = EmbeddedMetadataStore.inMemory()
        try await s.put("a", b("1"))
        let dup = await #expect(throws: WoodpeckerError.self) {
            try await s.txn(compare: [], then: [.put(key: "x", value: []), .put(key: "x", value: [])])
        }
        #expect(dup?.code == .invalidArgument)
        let overlap = await #expect(throws: WoodpeckerError.self) {
            try await s.txn(compare: [], then: [.put(key: "p/x", value: []), .deletePrefix("p/")])
        }
        #expect(overlap?.code == .invalidArgument)
        let lease = await #expect(throws: WoodpeckerError.self) { try await s.put("y", b("1"), lease: 12345) }
        #expect(lease?.code == .keyNotFound)
        let tooMany = await #expect(throws: WoodpeckerError.self) {
            try await s.txn(compare: [], then: (0..<129).map { .put(key: "k\($0)", value: []) })
        }
        #expect(tooMany?.code == .invalidArgument)
        #expect(await s.currentRevision == 2)
        await s.close()
    }

    @Test func watchFromCompactedRevisionFails() async throws {
        var o = EmbeddedMetadataStore.Options()
        o.historyEvents = 8
        let s = EmbeddedMetadataStore.inMemory(options: o)
        for i in 0..<20 { try await s.put("w/\(i)", b("\(i)")) }  // revisions 2...21
        let e = await #expect(throws: WoodpeckerError.self) { try await s.watch(prefix: "w/", fromRevision: 2) }
        #expect(e?.code == .revisionConflict && e?.message.contains("compacted") == true)
        let w = try await s.watch(prefix: "w/", fromRevision: 18)
        let conf = MetadataStoreConformance { s }
        let events = try await conf.collect(w, 3)
        #expect(events.map(\.kv.modRevision) == [19, 20, 21])
        w.cancel()
        await s.close()
    }

    @Test func slowWatcherEndsWithRetryableErrorAfterItsBuffer() async throws {
        var o = EmbeddedMetadataStore.Options()
        o.watchBufferEvents = 4
        let s = EmbeddedMetadataStore.inMemory(options: o)
        let w = try await s.watch(prefix: "", fromRevision: 0)
        for i in 0..<10 { try await s.put("k\(i)", b("\(i)")) }
        var got: [Int64] = []
        var failure: (any Error)?
        do {
            for try await e in w.events { got.append(e.kv.modRevision) }
        } catch {
            failure = error
        }
        #expect(got == [2, 3, 4, 5], "the buffered events arrive first, in order")
        let e = try #require(failure as? WoodpeckerError)
        #expect(e.code == .bufferFull && e.isRetryable)
        await s.close()
    }

    @Test func closeEndsWatchesWithClientClosed() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        let w = try await s.watch(prefix: "", fromRevision: 0)
        await s.close()
        await #expect(throws: WoodpeckerError.self) { for try await _ in w.events {} }
    }

    // MARK: durability

    @Test func secondOpenOfTheSameDirectoryFails() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        let e = await #expect(throws: WoodpeckerError.self) { _ = try await EmbeddedMetadataStore(directory: dir.path) }
        #expect(e?.message.contains(dir.path) == true && e?.message.contains("in use") == true)
        await s.close()
        let again = try await EmbeddedMetadataStore(directory: dir.path)  // the lock is released on close
        await again.close()
    }

    @Test func reopenAfterCloseKeepsStateRevisionsAndLeases() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        let lease = try await s.grantLease(ttlSeconds: 30)
        for i in 0..<50 { try await s.put("k/\(i % 20)", b("v\(i)")) }
        try await s.put("leased", b("x"), lease: lease)
        try await s.delete("k/3")
        _ = try await s.txn(compare: [.absent("c")], then: [.put(key: "c", value: b("1")), .deletePrefix("k/1")])
        let before = try await dump(s)
        await s.close()

        let r = try await EmbeddedMetadataStore(directory: dir.path)
        #expect(r.recoveredTornBytes == 0)
        let after = try await dump(r)
        #expect(after.0 == before.0 && after.1 == before.1)
        #expect(try await r.get("leased")?.lease == lease)
        let ttl = try #require(try await r.leaseTimeToLive(lease))
        #expect(ttl > 25 && ttl <= 30)
        #expect(try await r.grantLease(ttlSeconds: 5) > lease, "lease ids continue after a restart")
        #expect(try await r.put("next", b("n")) == before.1 + 1)
        let w = try await r.watch(prefix: "k/", fromRevision: before.1 - 3)  // history rebuilt from the journal
        w.cancel()
        await r.close()
    }

    @Test(arguments: ["truncate", "flipBits"])
    func reopenAfterTornTailLosesOnlyTheLastRecord(_ damage: String) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        var revs: [Int64] = []
        for i in 0..<10 { revs.append(try await s.put("k\(i)", b(String(repeating: "v", count: 40 + i)))) }
        let before = try await dump(s)
        await s.close()

        let files = try journalFiles(dir.path)
        try #require(files.count == 1)
        let file = dir.path + "/" + files[0]
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        if damage == "truncate" {
            bytes.removeLast(3)
        } else {
            bytes[bytes.count - 5] ^= 0x5a  // inside the last record's value
        }
        try Data(bytes).write(to: URL(fileURLWithPath: file))

        let r = try await EmbeddedMetadataStore(directory: dir.path)
        #expect(r.recoveredTornBytes > 0)
        let after = try await dump(r)
        #expect(after.1 == before.1 - 1)
        #expect(after.0 == before.0.filter { $0.key != "k9" })
        #expect(try await r.get("k9") == nil)
        #expect(try await r.put("k9", b("again")) == revs[9], "the revision continues from the last good record")
        await r.close()
        // The cut is durable: a third open finds a clean journal with the new record.
        let third = try await EmbeddedMetadataStore(directory: dir.path)
        #expect(third.recoveredTornBytes == 0)
        #expect(try await third.get("k9")?.stringValue == "again")
        await third.close()
    }

    @Test func damageInAnOlderJournalGenerationIsReportedNotSkipped() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        for i in 0..<5 { try await s.put("k\(i)", b("v")) }
        await s.close()
        let files = try journalFiles(dir.path)
        try #require(files.count == 1)
        let file = dir.path + "/" + files[0]
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        bytes[10] ^= 0xff  // first record
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        // A later generation exists, so the damage cannot be a torn tail.
        #expect(FileManager.default.createFile(atPath: dir.path + "/journal-0000000000000001.wal", contents: Data()))
        let e = await #expect(throws: WoodpeckerError.self) { _ = try await EmbeddedMetadataStore(directory: dir.path) }
        #expect(e?.code == .metadataCorrupted)
    }

    @Test func snapshotPlusJournalReopen() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        var o = EmbeddedMetadataStore.Options()
        o.snapshotJournalBytes = 4096
        let s = try await EmbeddedMetadataStore(directory: dir.path, options: o)
        let lease = try await s.grantLease(ttlSeconds: 60)
        try await s.put("leased", b("l"), lease: lease)
        for i in 0..<300 { try await s.put("k/\(i % 37)", b(String(repeating: "x", count: 100) + "\(i)")) }
        try await s.delete("k/5")
        let before = try await dump(s)
        await s.close()

        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(names.contains("snapshot") && !names.contains("snapshot.tmp"))
        let journals = try journalFiles(dir.path)
        #expect(journals.count == 1 && journals[0] != "journal-0000000000000000.wal", "old generations are removed")

        let r = try await EmbeddedMetadataStore(directory: dir.path, options: o)
        let after = try await dump(r)
        #expect(after.0 == before.0 && after.1 == before.1)
        #expect(try await r.leaseTimeToLive(lease) != nil)
        #expect(try await r.get("leased")?.lease == lease)
        // Revisions before the snapshot are no longer in the history.
        let e = await #expect(throws: WoodpeckerError.self) { _ = try await r.watch(prefix: "k/", fromRevision: 2) }
        #expect(e?.code == .revisionConflict)
        #expect(try await r.put("after", b("a")) == before.1 + 1)
        await r.close()
    }

    @Test func leaseGrantedBeforeRestartExpiresAfterIt() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        let lease = try await s.grantLease(ttlSeconds: 1)
        try await s.put("eph", b("x"), lease: lease)
        await s.close()
        let r = try await EmbeddedMetadataStore(directory: dir.path)
        let w = try await r.watch(prefix: "eph", fromRevision: 0)  // starts the expiry timer; no further calls
        let conf = MetadataStoreConformance { r }
        let events = try await conf.collect(w, 1, timeoutMs: 4_000)
        #expect(events.first?.kind == .delete && events.first?.kv.key == "eph")
        #expect(try await r.get("eph") == nil)
        await r.close()
    }

    @Test func putLatencyAndGroupCommit() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try await EmbeddedMetadataStore(directory: dir.path)
        let value = [UInt8](repeating: 0x61, count: 128)
        var samples: [UInt64] = []
        for i in 0..<300 {
            let t0 = WoodpeckerCore.Clock.monotonicNanos()
            try await s.put("lat/\(i % 50)", value)
            samples.append(WoodpeckerCore.Clock.monotonicNanos() - t0)
        }
        samples.sort()
        let p50 = Double(samples[samples.count / 2]) / 1000
        let p99 = Double(samples[samples.count * 99 / 100]) / 1000
        let t0 = WoodpeckerCore.Clock.monotonicNanos()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for t in 0..<16 {
                g.addTask { for i in 0..<50 { try await s.put("conc/\(t)/\(i)", value) } }
            }
            try await g.waitForAll()
        }
        let seconds = Double(WoodpeckerCore.Clock.monotonicNanos() - t0) / 1e9
        print("EmbeddedMetadataStore on-disk put (128 B, sequential): p50 \(p50) µs, p99 \(p99) µs; 16 concurrent writers: \(Int(800 / seconds)) puts/s")
        #expect(try await s.range(prefix: "conc/").count == 800)
        await s.close()
    }
}
