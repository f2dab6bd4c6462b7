import Testing
import WoodpeckerCore
import WoodpeckerMetadata

/// The behaviour every `MetadataStore` must have: etcd v3 semantics as Woodpecker relies on them.
///
/// Usage: build one with a factory that returns a store (fresh or shared) and call a check. Each check creates its
/// own store through the factory, uses only keys under `root`, and closes the store. Revision checks are relative
/// (r2 == r1 + 1), so a shared etcd works as long as nothing else writes to it during a check.
struct MetadataStoreConformance: Sendable {
    let makeStore: @Sendable () async throws -> any MetadataStore
    /// Prefix of every key a check writes.
    let root: String

    init(root: String = "/conformance-\(UInt32.random(in: 0...UInt32.max))/",
         makeStore: @escaping @Sendable () async throws -> any MetadataStore) {
        self.root = root
        self.makeStore = makeStore
    }

    func withStore(_ body: (any MetadataStore) async throws -> Void) async throws {
        let store = try await makeStore()
        do {
            try await body(store)
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }

    private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    // MARK: revisions and basic operations

    /// Each write bumps the global revision once; createRevision/modRevision/version follow etcd.
    func revisions() async throws {
        try await withStore { s in
            let a = root + "rev/a"
            let r1 = try await s.put(a, b("1"))
            let kv1 = try #require(try await s.get(a))
            #expect(kv1.createRevision == r1 && kv1.modRevision == r1 && kv1.version == 1 && kv1.stringValue == "1")
            let r2 = try await s.put(a, b("2"))
            #expect(r2 == r1 + 1)
            let kv2 = try #require(try await s.get(a))
            #expect(kv2.createRevision == r1 && kv2.modRevision == r2 && kv2.version == 2)
            let r3 = try await s.put(root + "rev/b", b("x"))
            #expect(r3 == r2 + 1)
            #expect(try await s.delete(a))
            #expect(try await s.get(a) == nil)
            #expect(try await !s.delete(a), "deleting an absent key reports false")
            // The first delete bumped the revision, the second (nothing deleted) did not.
            let r5 = try await s.put(a, b("3"))
            #expect(r5 == r3 + 2)
            let kv5 = try #require(try await s.get(a))
            #expect(kv5.createRevision == r5 && kv5.version == 1, "a recreated key starts over")
            // A read-only transaction does not bump the revision.
            let ro = try await s.txn(compare: [], then: [.get(key: a)])
            #expect(ro.succeeded && ro.revision == r5 && ro.gets.first??.stringValue == "3")
            // A transaction bumps once for all its writes.
            let t = try await s.txn(compare: [], then: [.put(key: root + "rev/c", value: b("c")),
                                                        .put(key: root + "rev/d", value: b("d"))])
            #expect(t.revision == r5 + 1)
            #expect(try await s.get(root + "rev/c")?.modRevision == t.revision)
            #expect(try await s.get(root + "rev/d")?.modRevision == t.revision)
            #expect(try await s.readRevision() == t.revision)
        }
    }

    /// Compare-and-swap on modRevision, version and value, with every operator.
    func compareAndSwap() async throws {
        try await withStore { s in
            let k = root + "cas/k"
            let r = try await s.put(k, b("v1"))
            let ok = try await s.txn(compare: [.unchanged(k, modRevision: r)], then: [.put(key: k, value: b("v2"))])
            #expect(ok.succeeded && ok.revision == r + 1)
            let stale = try await s.txn(compare: [.unchanged(k, modRevision: r)], then: [.put(key: k, value: b("v3"))])
            #expect(!stale.succeeded && stale.revision == r + 1, "a stale CAS fails and writes nothing")
            #expect(try await s.get(k)?.stringValue == "v2")

            let checks: [(Compare, Bool)] = [
                (Compare(key: k, .version(2)), true),
                (Compare(key: k, .version(2), .notEqual), false),
                (Compare(key: k, .version(1), .greater), true),
                (Compare(key: k, .version(3), .less), true),
                (Compare(key: k, .modRevision(r), .greater), true),
                (Compare(key: k, .modRevision(r + 1), .less), false),
                (Compare(key: k, .createRevision(r)), true),
                (Compare(key: k, .value(b("v2"))), true),
                (Compare(key: k, .value(b("v1")), .greater), true),
                (Compare(key: k, .value(b("v3")), .less), true),
                (Compare(key: k, .value(b("v2")), .notEqual), false),
                (.exists(k), true),
                (.absent(k), false),
                (.absent(root + "cas/missing"), true),
                (Compare(key: root + "cas/missing", .version(0)), true),
                (Compare(key: root + "cas/missing", .value([])), false),
            ]
            for (c, expected) in checks {
                let t = try await s.txn(compare: [c], then: [])
                #expect(t.succeeded == expected, "\(c)")
            }
            // All compares must hold.
            let mixed = try await s.txn(compare: [.exists(k), .absent(k)], then: [.put(key: k, value: b("no"))])
            #expect(!mixed.succeeded)
            #expect(try await s.get(k)?.stringValue == "v2")
        }
    }

    /// 16 concurrent create-if-absent transactions: exactly one wins, the others see the winner's value.
    func createIfAbsentRace() async throws {
        try await withStore { s in
            let k = root + "race/lock"
            let results = try await withThrowingTaskGroup(of: (Int, TxnResult).self) { g in
                for i in 0..<16 {
                    g.addTask {
                        (i, try await s.txn(compare: [.absent(k)], then: [.put(key: k, value: Array("owner-\(i)".utf8))],
                                            else: [.get(key: k)]))
                    }
                }
                var out: [(Int, TxnResult)] = []
                for try await r in g { out.append(r) }
                return out
            }
            let winners = results.filter { $0.1.succeeded }
            try #require(winners.count == 1)
            let owner = "owner-\(winners[0].0)"
            #expect(try await s.get(k)?.stringValue == owner)
            for (_, r) in results where !r.succeeded {
                #expect(r.gets.count == 1 && r.gets[0]?.stringValue == owner)
            }
        }
    }

    /// Prefix ranges are in key byte order (not Unicode order), exclude keys outside the prefix, honour the limit.
    func prefixRangeAndLimit() async throws {
        try await withStore { s in
            let p = root + "range/"
            for k in ["b", "a", "c", "a/x", "Z", "é", "z"] { try await s.put(p + k, b(k)) }
            try await s.put(root + "range", b("outside"))
            try await s.put(root + "range0", b("outside"))
            let all = try await s.range(prefix: p)
            // Bytes: "Z"=0x5a < "a"=0x61 < "a/x" < "b" < "c" < "z"=0x7a < "é"=0xc3 0xa9.
            #expect(all.map(\.key) == ["Z", "a", "a/x", "b", "c", "z", "é"].map { p + $0 })
            #expect(all.map(\.stringValue) == ["Z", "a", "a/x", "b", "c", "z", "é"])
            let two = try await s.range(prefix: p, limit: 2)
            #expect(two.map(\.key) == [p + "Z", p + "a"])
            #expect(try await s.range(prefix: p + "a").map(\.key) == [p + "a", p + "a/x"])
            #expect(try await s.range(prefix: root + "nothing/").isEmpty)
        }
    }

    /// Delete of one key and of a prefix; a prefix delete is one revision.
    func deleteKeysAndPrefix() async throws {
        try await withStore { s in
            let p = root + "del/"
            for i in 0..<5 { try await s.put(p + "k\(i)", b("\(i)")) }
            let keep = try await s.put(root + "delkeep", b("keep"))
            let t = try await s.txn(compare: [], then: [.deletePrefix(p)])
            #expect(t.succeeded && t.revision == keep + 1)
            #expect(try await s.range(prefix: p).isEmpty)
            #expect(try await s.get(root + "delkeep")?.stringValue == "keep")
            let empty = try await s.txn(compare: [], then: [.deletePrefix(p)])
            #expect(empty.revision == t.revision, "deleting nothing does not bump the revision")
            let r = try await s.put(p + "k1", b("again"))
            let kv = try #require(try await s.get(p + "k1"))
            #expect(kv.createRevision == r && kv.version == 1)
            let d = try await s.txn(compare: [.exists(p + "k1")], then: [.delete(key: p + "k1"), .get(key: p + "k1")])
            #expect(d.succeeded && d.gets.count == 1 && d.gets[0] == nil)
        }
    }

    /// The else branch runs when a compare fails, and its gets report values (nil for absent keys); then-branch
    /// gets see the branch's own earlier writes.
    func txnBranchesAndGets() async throws {
        try await withStore { s in
            let k = root + "txn/k"
            let r = try await s.put(k, b("v"))
            let t = try await s.txn(compare: [Compare(key: k, .value(b("other")))],
                                    then: [.put(key: k, value: b("x"))],
                                    else: [.get(key: k), .get(key: root + "txn/missing")])
            #expect(!t.succeeded && t.revision == r)
            #expect(t.gets.count == 2 && t.gets[0]?.stringValue == "v" && t.gets[0]?.modRevision == r && t.gets[1] == nil)
            #expect(try await s.get(k)?.stringValue == "v")
            let u = try await s.txn(compare: [Compare(key: k, .value(b("v")))],
                                    then: [.put(key: k, value: b("w")), .get(key: k)], else: [.get(key: k)])
            #expect(u.succeeded && u.revision == r + 1)
            #expect(u.gets.count == 1 && u.gets[0]?.stringValue == "w" && u.gets[0]?.version == 2)
        }
    }

    // MARK: leases

    /// An expired lease deletes its keys (and only its keys); the lease is gone afterwards.
    func leaseExpiryRemovesKeys() async throws {
        try await withStore { s in
            let k = root + "lease/ephemeral"
            let id = try await s.grantLease(ttlSeconds: 1)
            #expect(id != 0)
            try await s.put(k, b("x"), lease: id)
            try await s.put(root + "lease/durable", b("y"))
            #expect(try await s.get(k)?.lease == id)
            let ttl = try #require(try await s.leaseTimeToLive(id))
            #expect(ttl >= 0 && ttl <= 2)  // etcd rounds a 1 s TTL up to its minimum of 2 s
            let deadline = WoodpeckerCore.Clock.monotonicMillis() + 8_000
            while try await s.get(k) != nil {
                try #require(WoodpeckerCore.Clock.monotonicMillis() < deadline, "lease did not expire within 8 s")
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            #expect(try await s.leaseTimeToLive(id) == nil)
            #expect(try await s.get(root + "lease/durable")?.stringValue == "y")
            await #expect(throws: WoodpeckerError.self) { try await s.keepAlive(lease: id) }
            await #expect(throws: WoodpeckerError.self) { try await s.put(k, b("z"), lease: id) }
        }
    }

    /// keepAlive resets the TTL: a 2 s lease renewed every 300 ms lives 3.5 s and more.
    func keepAlivePreventsExpiry() async throws {
        try await withStore { s in
            let k = root + "keepalive/k"
            let id = try await s.grantLease(ttlSeconds: 2)
            try await s.put(k, b("x"), lease: id)
            let end = WoodpeckerCore.Clock.monotonicMillis() + 3_500
            while WoodpeckerCore.Clock.monotonicMillis() < end {
                try await s.keepAlive(lease: id)
                try await Task.sleep(nanoseconds: 300_000_000)
            }
            #expect(try await s.get(k)?.stringValue == "x")
            #expect(try await s.leaseTimeToLive(id) != nil)
            try await s.revokeLease(id)
        }
    }

    /// Revoke deletes exactly the lease's keys at one new revision.
    func revokeDeletesKeys() async throws {
        try await withStore { s in
            let id = try await s.grantLease(ttlSeconds: 60)
            try await s.put(root + "revoke/a", b("a"), lease: id)
            try await s.put(root + "revoke/b", b("b"), lease: id)
            let before = try await s.put(root + "revoke/c", b("c"))
            try await s.revokeLease(id)
            #expect(try await s.range(prefix: root + "revoke/").map(\.key) == [root + "revoke/c"])
            #expect(try await s.put(root + "revoke/d", b("d")) == before + 2)
            #expect(try await s.leaseTimeToLive(id) == nil)
            await #expect(throws: WoodpeckerError.self) { try await s.revokeLease(id) }
            // A key put again without a lease is detached: revoking its old lease leaves it.
            let id2 = try await s.grantLease(ttlSeconds: 60)
            try await s.put(root + "revoke/e", b("e"), lease: id2)
            try await s.put(root + "revoke/e", b("e2"))
            try await s.revokeLease(id2)
            #expect(try await s.get(root + "revoke/e")?.stringValue == "e2")
            let id3 = try await s.grantLease(ttlSeconds: 60)
            #expect(id3 != id && id3 != id2, "lease ids are not reused")
        }
    }

    // MARK: watches

    /// Events for the prefix arrive in revision order, with the right kinds and revisions; other keys are not sent.
    func watchEventsInOrder() async throws {
        try await withStore { s in
            let p = root + "watch/"
            let w = try await s.watch(prefix: p, fromRevision: 0)
            let r1 = try await s.put(p + "a", b("1"))
            try await s.put(root + "watchnot/x", b("no"))
            let r2 = try await s.put(p + "b", b("2"))
            let r3 = try await s.put(p + "a", b("3"))
            let t = try await s.txn(compare: [], then: [.delete(key: p + "b"), .put(key: p + "c", value: b("4"))])
            let events = try await collect(w, 5)
            #expect(events.map(\.kind) == [.put, .put, .put, .delete, .put])
            #expect(events.map(\.kv.key) == [p + "a", p + "b", p + "a", p + "b", p + "c"])
            #expect(events.map(\.kv.modRevision) == [r1, r2, r3, t.revision, t.revision])
            #expect(events[2].kv.version == 2 && events[2].kv.createRevision == r1 && events[2].kv.stringValue == "3")
            w.cancel()
        }
    }

    /// A watch from a past revision replays every later event, then continues live.
    func watchReplaysFromPastRevision() async throws {
        try await withStore { s in
            let p = root + "replay/"
            let r1 = try await s.put(p + "a", b("1"))
            let r2 = try await s.put(p + "b", b("2"))
            try await s.delete(p + "a")
            let w = try await s.watch(prefix: p, fromRevision: r1)
            let r4 = try await s.put(p + "c", b("3"))
            let events = try await collect(w, 3)
            #expect(events.map(\.kv.key) == [p + "b", p + "a", p + "c"])
            #expect(events.map(\.kind) == [.put, .delete, .put])
            #expect(events[0].kv.modRevision == r2 && events[1].kv.modRevision == r2 + 1 && events[2].kv.modRevision == r4)
            w.cancel()
        }
    }

    /// Deletes, including those by lease revoke, are delete events with the deletion's revision and no value.
    func watchDeleteEvents() async throws {
        try await withStore { s in
            let p = root + "wdel/"
            let id = try await s.grantLease(ttlSeconds: 60)
            try await s.put(p + "a", b("1"))
            try await s.put(p + "l", b("2"), lease: id)
            let w = try await s.watch(prefix: p, fromRevision: 0)
            try await s.delete(p + "a")
            try await s.revokeLease(id)
            let after = try await s.put(p + "z", b("3"))
            let events = try await collect(w, 3)
            #expect(events.map(\.kind) == [.delete, .delete, .put])
            #expect(events.map(\.kv.key) == [p + "a", p + "l", p + "z"])
            #expect(events[0].kv.value.isEmpty && events[1].kv.value.isEmpty)
            #expect(events[0].kv.modRevision == after - 2 && events[1].kv.modRevision == after - 1)
            w.cancel()
        }
    }

    /// cancel() ends the stream; the store keeps working.
    func watchCancelEndsStream() async throws {
        try await withStore { s in
            let p = root + "cancel/"
            let w = try await s.watch(prefix: p, fromRevision: 0)
            try await s.put(p + "a", b("1"))
            #expect(try await collect(w, 1).count == 1)
            w.cancel()
            // Buffered events may still drain; then the stream must end.
            let ended = try await withTimeout(ms: 5_000) {
                for try await _ in w.events {}
                return true
            }
            #expect(ended == true)
            try await s.put(p + "b", b("2"))
            #expect(try await s.get(p + "b")?.stringValue == "2")
        }
    }

    // MARK: helpers

    /// The next `n` events of `w`, failing after `timeoutMs`.
    func collect(_ w: any MetadataWatch, _ n: Int, timeoutMs: Int = 10_000) async throws -> [WatchEvent] {
        let events = try await withTimeout(ms: timeoutMs) { () async throws -> [WatchEvent] in
            var out: [WatchEvent] = []
            for try await e in w.events {
                out.append(e)
                if out.count == n { break }
            }
            return out
        }
        let got = try #require(events, "no \(n) watch events within \(timeoutMs) ms")
        #expect(got.count == n, "watch stream ended after \(got.count) of \(n) events")
        return got
    }
}

/// Runs `body`, returning nil if it takes longer than `ms`.
func withTimeout<T: Sendable>(ms: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { g in
        g.addTask { try await body() }
        g.addTask {
            try await Task.sleep(nanoseconds: UInt64(ms) * 1_000_000)
            return nil
        }
        let first = try await g.next()!
        g.cancelAll()
        return first
    }
}
