import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerIO
@testable import WoodpeckerMetadata

/// Runs `body` with a fresh etcd, an event loop and a store on that etcd; stops everything afterwards and checks
/// that the store left no libuv handle open.
func withEtcd(extraArgs: [String] = [], options: EtcdMetadataStore.Options = EtcdMetadataStore.Options(),
              _ body: (EtcdTestServer, EventLoop, EtcdMetadataStore) async throws -> Void) async throws
{
    let server = try await EtcdTestServer.start(extraArgs: extraArgs)
    defer { server.stop() }
    let loop = EventLoop(name: "etcd-test")
    let store = EtcdMetadataStore(endpoints: [server.endpoint], loop: loop, options: options)
    do {
        try await body(server, loop, store)
    } catch {
        await store.close()
        _ = loop.shutdown()
        throw error
    }
    await store.close()
    #expect(await loop.openHandleCount() == 0)
    #expect(loop.shutdown() == 0)
}

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Waits for the first error of `w`'s stream (nil if it ends normally or `ms` passes); events are collected.
private func streamError(_ w: any MetadataWatch, ms: Int = 10_000) async -> (any Error)? {
    do {
        _ = try await withTimeout(ms: ms) {
            for try await _ in w.events {}
            return true
        }
        return nil
    } catch {
        return error
    }
}

@Suite(.enabled(if: EtcdTestServer.enabled, EtcdTestServer.skipReason))
struct EtcdMetadataStoreTests {
    /// The whole MetadataStoreConformance suite against a real etcd, each check on a fresh key prefix and store.
    @Test func conformance() async throws {
        let server = try await EtcdTestServer.start()
        defer { server.stop() }
        let loop = EventLoop(name: "etcd-conf")
        defer { _ = loop.shutdown() }
        let checks: [(String, (MetadataStoreConformance) async throws -> Void)] = [
            ("revisions", { try await $0.revisions() }),
            ("compareAndSwap", { try await $0.compareAndSwap() }),
            ("createIfAbsentRace", { try await $0.createIfAbsentRace() }),
            ("prefixRangeAndLimit", { try await $0.prefixRangeAndLimit() }),
            ("deleteKeysAndPrefix", { try await $0.deleteKeysAndPrefix() }),
            ("txnBranchesAndGets", { try await $0.txnBranchesAndGets() }),
            ("leaseExpiryRemovesKeys", { try await $0.leaseExpiryRemovesKeys() }),
            ("keepAlivePreventsExpiry", { try await $0.keepAlivePreventsExpiry() }),
            ("revokeDeletesKeys", { try await $0.revokeDeletesKeys() }),
            ("watchEventsInOrder", { try await $0.watchEventsInOrder() }),
            ("watchReplaysFromPastRevision", { try await $0.watchReplaysFromPastRevision() }),
            ("watchDeleteEvents", { try await $0.watchDeleteEvents() }),
            ("watchCancelEndsStream", { try await $0.watchCancelEndsStream() }),
        ]
        let endpoint = server.endpoint
        for (name, check) in checks {
            let conformance = MetadataStoreConformance(root: "/conf-\(name)-\(UUID().uuidString.prefix(8))/") {
                EtcdMetadataStore(endpoints: [endpoint], loop: loop)
            }
            let start = Clock.monotonicMillis()
            try await check(conformance)
            print("etcd conformance \(name): \(Clock.monotonicMillis() - start) ms")
        }
        #expect(await loop.openHandleCount() == 0, "every store closed its connections")
    }

    /// With etcd gone, calls and new watches fail fast with a retryable `.metadataUnavailable` that names the
    /// endpoint, and an open watch gives up after `watchReconnectTimeoutMs` with the same; after a restart on the
    /// same data dir calls work again and see the old data.
    @Test func stoppedEtcdIsRetryableAndRestartRecovers() async throws {
        try await withEtcd { server, loop, store in
            let r = try await store.put("/down/a", b("1"))
            var impatient = EtcdMetadataStore.Options()
            impatient.watchReconnectTimeoutMs = 500
            let shortStore = EtcdMetadataStore(endpoints: [server.endpoint], loop: loop, options: impatient)
            let w = try await shortStore.watch(prefix: "/down/", fromRevision: 0)
            server.kill()
            // A watch that cannot reconnect ends with a retryable error naming the endpoint.
            let we = await streamError(w) as? WoodpeckerError
            #expect(we?.code == .metadataUnavailable && we?.isRetryable == true, "\(String(describing: we))")
            #expect(we?.message.contains(server.endpoint) == true && we?.message.contains("/down/") == true)
            await shortStore.close()
            let openError = await #expect(throws: WoodpeckerError.self) { try await store.watch(prefix: "/down/", fromRevision: 0) }
            #expect(openError?.code == .metadataUnavailable && openError?.isRetryable == true)
            let start = Clock.monotonicMillis()
            let error = await #expect(throws: WoodpeckerError.self) { try await store.get("/down/a") }
            #expect(error?.code == .metadataUnavailable && error?.isRetryable == true)
            #expect(error?.message.contains(server.endpoint) == true, "\(String(describing: error))")
            #expect(error?.message.contains("/down/a") == true, "names the key: \(String(describing: error))")
            #expect(Clock.monotonicMillis() - start < 3_000, "a refused connection fails fast")
            let putError = await #expect(throws: WoodpeckerError.self) { try await store.put("/down/b", b("2")) }
            #expect(putError?.code == .metadataUnavailable && putError?.isRetryable == true)
            try await server.restart()
            #expect(try await store.get("/down/a")?.modRevision == r)
            #expect(try await store.put("/down/b", b("2")) == r + 1)
        }
    }

    /// A watch opened before etcd is killed reconnects after the restart from the revision after the last one it
    /// delivered: events made before the kill, and those made after the restart (before and after the watch is
    /// back), all arrive once and in order.
    @Test func watchSurvivesRestartWithoutLoss() async throws {
        try await withEtcd { server, _, store in
            let p = "/wr/"
            let w = try await store.watch(prefix: p, fromRevision: 0)
            let r1 = try await store.put(p + "a", b("1"))
            let first = try await collectEvents(w, 1)
            #expect(first.map(\.kv.modRevision) == [r1])
            let r2 = try await store.put(p + "b", b("2"))  // may or may not be delivered before the kill
            server.kill()
            try await Task.sleep(nanoseconds: 300_000_000)  // the watch notices and starts retrying
            try await server.restart()
            let r3 = try await store.put(p + "c", b("3"))
            try await store.put("/elsewhere", b("x"))
            let r4 = try await store.txn(compare: [], then: [.delete(key: p + "a"), .put(key: p + "d", value: b("4"))]).revision
            let rest = try await collectEvents(w, 4)
            #expect(rest.map(\.kv.key) == [p + "b", p + "c", p + "a", p + "d"])
            #expect(rest.map(\.kv.modRevision) == [r2, r3, r4, r4])
            #expect(rest.map(\.kind) == [.put, .put, .delete, .put])
            w.cancel()
        }
    }

    /// Endpoints [dead, live]: every kind of call and a watch go through, and the store keeps using the live one.
    @Test func failoverToTheNextEndpoint() async throws {
        let server = try await EtcdTestServer.start()
        defer { server.stop() }
        let dead = "http://127.0.0.1:\(try freePort())"
        let loop = EventLoop(name: "etcd-failover")
        let store = EtcdMetadataStore(endpoints: [dead, server.endpoint], loop: loop)
        let w = try await store.watch(prefix: "/fo/", fromRevision: 0)
        let r = try await store.put("/fo/a", b("1"))
        #expect(try await store.get("/fo/a")?.stringValue == "1")
        let t = try await store.txn(compare: [.unchanged("/fo/a", modRevision: r)], then: [.put(key: "/fo/a", value: b("2"))])
        #expect(t.succeeded)
        let lease = try await store.grantLease(ttlSeconds: 30)
        try await store.keepAlive(lease: lease)
        #expect(try await collectEvents(w, 2).map(\.kv.modRevision) == [r, t.revision])
        w.cancel()
        #expect(store.connection.endpointOrder().first == 1, "the live endpoint is tried first from now on")
        // Only dead endpoints: the error names each of them.
        let deadOnly = EtcdMetadataStore(endpoints: [dead, "127.0.0.1:\(try freePort())"], loop: loop)
        let e = await #expect(throws: WoodpeckerError.self) { try await deadOnly.range(prefix: "/fo/") }
        #expect(e?.code == .metadataUnavailable && e?.isRetryable == true)
        #expect(e?.message.contains(dead) == true && e?.message.contains("'/fo/'") == true, "\(String(describing: e))")
        await deadOnly.close()
        await store.close()
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    /// Values are opaque bytes: invalid UTF-8, NULs and a value written by another client come back unchanged,
    /// as does an empty value (which the gateway omits).
    @Test func valuesAreOpaqueBytes() async throws {
        try await withEtcd { server, loop, store in
            let garbage: [UInt8] = [0xff, 0x00, 0xc3, 0x28, 0xfe, 0x0a, 0x7b, 0x22]
            try await store.put("/bytes/g", garbage)
            #expect(try await store.get("/bytes/g")?.value == garbage)
            try await store.put("/bytes/empty", [])
            let empty = try #require(try await store.get("/bytes/empty"))
            #expect(empty.value.isEmpty && empty.version == 1)
            // Written by another client: a value that is not what Woodpecker would store.
            let raw = "{\"key\":\"\(EtcdJSON.base64("/bytes/raw"))\",\"value\":\"\(EtcdJSON.base64([0x80, 0x81, 0x00]))\"}"
            _ = try await server.post("/v3/kv/put", raw, loop: loop)
            #expect(try await store.get("/bytes/raw")?.value == [0x80, 0x81, 0x00])
            #expect(try await store.range(prefix: "/bytes/").map(\.key) == ["/bytes/empty", "/bytes/g", "/bytes/raw"])
            let t = try await store.txn(compare: [Compare(key: "/bytes/g", .value(garbage))], then: [.get(key: "/bytes/raw")])
            #expect(t.succeeded && t.gets.first??.value == [0x80, 0x81, 0x00])
        }
    }

    /// A watch from a compacted revision throws `.revisionConflict` saying "compacted"; one from a future revision
    /// is fine.
    @Test func watchFromCompactedRevisionIsRevisionConflict() async throws {
        try await withEtcd { server, loop, store in
            let r1 = try await store.put("/cw/a", b("1"))
            try await store.put("/cw/a", b("2"))
            let r3 = try await store.put("/cw/a", b("3"))
            _ = try await server.post("/v3/kv/compaction", "{\"revision\":\"\(r3)\"}", loop: loop)
            let we = await #expect(throws: WoodpeckerError.self) { try await store.watch(prefix: "/cw/", fromRevision: r1) }
            #expect(we?.code == .revisionConflict && we?.message.contains("compacted") == true, "\(String(describing: we))")
            // A stream that (re)opens at a compacted revision: etcd confirms it, then cancels it with the
            // compaction revision, which becomes the same error.
            let raw = try await EtcdWatchStream.open(connection: store.connection, prefix: "/cw/", startRevision: r1 + 1,
                                                     maxMessageBytes: 1 << 20)
            let canceled = try #require(try await raw.nextMessage()?.object("result"))
            #expect(canceled.bool("canceled") && canceled.int64("compact_revision") == r3)
            let streamError = EtcdWatchStream.canceledError(canceled, endpoint: server.endpoint, subject: "w", storeName: "s")
            #expect((streamError as? WoodpeckerError)?.code == .revisionConflict)
            await raw.cancel()
            // A watch from a revision not reached yet is accepted.
            let future = try await store.watch(prefix: "/cw/", fromRevision: r3 + 100)
            future.cancel()
            // From the compaction revision on, it works.
            let w = try await store.watch(prefix: "/cw/", fromRevision: r3 - 1)
            #expect(try await collectEvents(w, 1).map(\.kv.modRevision) == [r3])
            w.cancel()
        }
    }

    /// A server that does not speak the etcd gateway (etcd's own peer port) gives `.metadataCorrupted` naming the
    /// endpoint and the key; a lease that does not exist is `.keyNotFound`.
    @Test func badResponsesAndMissingLeases() async throws {
        try await withEtcd { server, loop, store in
            let wrong = EtcdMetadataStore(endpoints: [server.peerEndpoint], loop: loop)
            let e = await #expect(throws: WoodpeckerError.self) { try await wrong.get("/some/key") }
            #expect(e?.code == .metadataCorrupted)
            #expect(e?.message.contains(server.peerEndpoint) == true && e?.message.contains("/some/key") == true,
                    "\(String(describing: e))")
            await wrong.close()
            let missing = await #expect(throws: WoodpeckerError.self) { try await store.revokeLease(12345) }
            #expect(missing?.code == .keyNotFound)
            let ka = await #expect(throws: WoodpeckerError.self) { try await store.keepAlive(lease: 12345) }
            #expect(ka?.code == .keyNotFound)
            let ttl = try await store.leaseTimeToLive(12345)
            #expect(ttl == nil, "timetolive reports TTL -1 for a missing lease")
            let put = await #expect(throws: WoodpeckerError.self) { try await store.put("/l/k", b("v"), lease: 12345) }
            #expect(put?.code == .keyNotFound && put?.message.contains("/l/k") == true)
        }
    }

    /// With authentication enabled: the right password works (and a token rejected after its TTL is renewed
    /// transparently), a wrong one or none fails with a clear non-retryable error.
    @Test func authentication() async throws {
        try await withEtcd(extraArgs: ["--auth-token-ttl", "1"]) { server, loop, open in
            try await open.put("/auth/k", b("before"))
            for (path, body) in [("/v3/auth/user/add", "{\"name\":\"root\",\"password\":\"pw\"}"),
                                 ("/v3/auth/user/grant", "{\"user\":\"root\",\"role\":\"root\"}"),
                                 ("/v3/auth/enable", "{}")]
            {
                let r = try await server.post(path, body, loop: loop)
                try #require(r.contains("header"), "\(path): \(r)")
            }
            var good = EtcdMetadataStore.Options()
            good.username = "root"
            good.password = "pw"
            let store = EtcdMetadataStore(endpoints: [server.endpoint], loop: loop, options: good)
            #expect(try await store.get("/auth/k")?.stringValue == "before")
            let w = try await store.watch(prefix: "/auth/", fromRevision: 0)
            let firstToken = try #require(store.connection.currentToken)
            try await Task.sleep(nanoseconds: 2_500_000_000)  // the 1 s token expires
            let r = try await store.put("/auth/k", b("after"))
            let secondToken = try #require(store.connection.currentToken)
            #expect(secondToken != firstToken, "the expired token was replaced by a new one")
            #expect(try await store.get("/auth/k")?.modRevision == r)
            #expect(try await collectEvents(w, 1).map(\.kv.modRevision) == [r])
            w.cancel()
            await store.close()

            var bad = good
            bad.password = "wrong"
            let badStore = EtcdMetadataStore(endpoints: [server.endpoint], loop: loop, options: bad)
            let e = await #expect(throws: WoodpeckerError.self) { try await badStore.get("/auth/k") }
            #expect(e?.isRetryable == false && e?.message.contains("authentication as user 'root'") == true,
                    "\(String(describing: e))")
            await badStore.close()
            let none = await #expect(throws: WoodpeckerError.self) { try await open.get("/auth/k") }
            #expect(none?.isRetryable == false && none?.message.contains("user and password") == true,
                    "\(String(describing: none))")
        }
    }

    /// Latency of put and of a CAS txn against the local etcd (printed, not asserted).
    @Test func latency() async throws {
        try await withEtcd { _, _, store in
            let n = 300
            let value = [UInt8](repeating: 0x61, count: 128)
            var puts: [UInt64] = []
            var txns: [UInt64] = []
            var rev = try await store.put("/lat/k", value)
            for _ in 0..<n {
                let t0 = Clock.monotonicNanos()
                rev = try await store.put("/lat/k", value)
                puts.append(Clock.monotonicNanos() - t0)
            }
            for _ in 0..<n {
                let t0 = Clock.monotonicNanos()
                let t = try await store.txn(compare: [.unchanged("/lat/k", modRevision: rev)],
                                            then: [.put(key: "/lat/k", value: value)], else: [.get(key: "/lat/k")])
                txns.append(Clock.monotonicNanos() - t0)
                #expect(t.succeeded)
                rev = t.revision
            }
            func report(_ name: String, _ xs: [UInt64]) {
                let s = xs.sorted()
                let ms = { (q: Double) in Double(s[min(s.count - 1, Int(Double(s.count) * q))]) / 1e6 }
                let opsPerSecond = Double(s.count) / (Double(s.reduce(0, +)) / 1e9)
                print("etcd latency \(name): p50 \(String(format: "%.3f", ms(0.5))) ms, p99 \(String(format: "%.3f", ms(0.99))) ms, \(Int(opsPerSecond)) ops/s (n=\(s.count), sequential)")
            }
            report("put (128 B)", puts)
            report("txn CAS put", txns)
        }
    }
}

/// URL parsing and gateway decoding, without etcd.
@Suite struct EtcdParsingTests {
    @Test func parseURL() throws {
        let one = try EtcdMetadataStore.parse(url: "etcd://127.0.0.1:2379/by-dev/woodpecker")
        #expect(one == EtcdMetadataStore.Location(endpoints: ["http://127.0.0.1:2379"], prefix: "by-dev/woodpecker/"))
        let many = try EtcdMetadataStore.parse(url: "etcds://u:p@a:1,b.example:2379/")
        #expect(many.endpoints == ["https://a:1", "https://b.example:2379"] && many.prefix == "")
        #expect(many.username == "u" && many.password == "p")
        #expect(try EtcdMetadataStore.parse(url: "etcd://h:1").prefix == "")
        for bad in ["http://h:1/x", "etcd://h/x", "etcd://h:99999/x", "etcd://h:1,/x", "etcd:///x"] {
            #expect(throws: WoodpeckerError.self, "\(bad)") { try EtcdMetadataStore.parse(url: bad) }
        }
    }

    @Test func int64AsStringOrNumberAndOmittedDefaults() throws {
        let o = try #require(EtcdJSON.decode(Array(#"{"a":"7","b":8,"c":"x","d":1.5,"kv":{"key":"Zm9v"}}"#.utf8)))
        #expect(o.int64("a") == 7 && o.int64("b") == 8 && o.int64("missing") == 0)
        #expect(o.int64("c") == nil && o.int64("d") == nil)
        #expect(!o.bool("succeeded"), "an omitted bool is false")
        let kv = try #require(o.object("kv").flatMap(EtcdJSON.keyValue))
        #expect(kv == KeyValue(key: "foo", value: [], createRevision: 0, modRevision: 0, version: 0, lease: 0))
        #expect(EtcdJSON.keyValues(o) == [], "an omitted kvs is empty")
        let badKey = try #require(EtcdJSON.decode(Array(#"{"key":"***","value":"YQ=="}"#.utf8)))
        #expect(EtcdJSON.keyValue(badKey) == nil)
        let badRev = try #require(EtcdJSON.decode(Array(#"{"key":"YQ==","mod_revision":"x"}"#.utf8)))
        #expect(EtcdJSON.keyValue(badRev) == nil)
        #expect(EtcdJSON.decode(Array("not json".utf8)) == nil)
    }

    @Test func prefixRangeEnd() {
        #expect(EtcdJSON.prefixEnd(Array("/a/".utf8)) == Array("/a0".utf8))
        #expect(EtcdJSON.prefixEnd([0x61, 0xff, 0xff]) == [0x62])
        #expect(EtcdJSON.prefixEnd([0xff]) == [0x00])
        #expect(EtcdJSON.prefixEnd([]) == [0x00])
    }
}

/// The next `n` events of `w` within 15 s.
func collectEvents(_ w: any MetadataWatch, _ n: Int) async throws -> [WatchEvent] {
    let got = try await withTimeout(ms: 15_000) { () async throws -> [WatchEvent] in
        var out: [WatchEvent] = []
        for try await e in w.events {
            out.append(e)
            if out.count == n { break }
        }
        return out
    }
    let events = try #require(got, "no \(n) watch events within 15 s")
    #expect(events.count == n, "the watch ended after \(events.count) of \(n) events")
    return events
}
