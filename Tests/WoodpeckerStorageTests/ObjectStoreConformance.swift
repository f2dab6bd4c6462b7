import Testing
import WoodpeckerCore
import WoodpeckerStorage

/// The `ObjectStore` contract as executable checks, reusable by every implementation (memory, local files, S3):
///
/// ```swift
/// @Test(arguments: ObjectStoreConformance.Check.allCases)
/// func conformance(_ check: ObjectStoreConformance.Check) async throws {
///     try await ObjectStoreConformance { MyStore(...) }.run(check)
/// }
/// ```
/// `make` must return an empty store (or one rooted at a fresh prefix); each check calls it once.
struct ObjectStoreConformance: Sendable {
    enum Check: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case putGetRoundTrip, overwrite, rangedGet, headPresentAndAbsent, getMissing, putIfAbsentTwice,
             concurrentPutIfAbsent, listPrefixAndPagination, listByteOrder, deleteIdempotent, batchDelete,
             nestedKeys, invalidKeysRejected
        var testDescription: String { rawValue }
    }

    let make: @Sendable () async throws -> any ObjectStore

    init(_ make: @escaping @Sendable () async throws -> any ObjectStore) {
        self.make = make
    }

    func run(_ check: Check) async throws {
        let store = try await make()
        switch check {
        case .putGetRoundTrip: try await putGetRoundTrip(store)
        case .overwrite: try await overwrite(store)
        case .rangedGet: try await rangedGet(store)
        case .headPresentAndAbsent: try await headPresentAndAbsent(store)
        case .getMissing: try await getMissing(store)
        case .putIfAbsentTwice: try await putIfAbsentTwice(store)
        case .concurrentPutIfAbsent: try await concurrentPutIfAbsent(store)
        case .listPrefixAndPagination: try await listPrefixAndPagination(store)
        case .listByteOrder: try await listByteOrder(store)
        case .deleteIdempotent: try await deleteIdempotent(store)
        case .batchDelete: try await batchDelete(store)
        case .nestedKeys: try await nestedKeys(store)
        case .invalidKeysRejected: try await invalidKeysRejected(store)
        }
    }

    // MARK: checks

    func putGetRoundTrip(_ s: any ObjectStore) async throws {
        let data = bytes(count: 10_000, seed: 1)
        try await s.put("rt/object", ByteBuffer(bytes: data))
        #expect(try await s.get("rt/object").readableBytesArray == data)
        try await s.put("rt/empty", ByteBuffer())
        #expect(try await s.get("rt/empty").readableBytes == 0)
        #expect(try await s.head("rt/empty")?.size == 0)
        // A buffer whose reader index moved: only the readable bytes are stored.
        var shifted = ByteBuffer(bytes: [9, 9, 9] + data)
        try shifted.skip(3)
        try await s.put("rt/shifted", shifted)
        #expect(try await s.get("rt/shifted").readableBytesArray == data)
    }

    func overwrite(_ s: any ObjectStore) async throws {
        try await s.put("ow/k", ByteBuffer(bytes: bytes(count: 5000, seed: 2)))
        let first = try #require(try await s.head("ow/k"))
        let second = bytes(count: 300, seed: 3)
        try await s.put("ow/k", ByteBuffer(bytes: second))
        #expect(try await s.get("ow/k").readableBytesArray == second)
        let info = try #require(try await s.head("ow/k"))
        #expect(info.size == 300)
        #expect(info.etag != first.etag)
    }

    func rangedGet(_ s: any ObjectStore) async throws {
        let data = bytes(count: 100, seed: 4)
        try await s.put("rg", ByteBuffer(bytes: data))
        #expect(try await s.get("rg", range: 10..<20).readableBytesArray == Array(data[10..<20]))
        #expect(try await s.get("rg", range: 0..<100).readableBytesArray == data)
        #expect(try await s.get("rg", range: 90..<200).readableBytesArray == Array(data[90..<100]))
        #expect(try await s.get("rg", range: 100..<110).readableBytes == 0)
        #expect(try await s.get("rg", range: 150..<160).readableBytes == 0)
        #expect(try await s.get("rg", range: 5..<5).readableBytes == 0)
        let e = await #expect(throws: WoodpeckerError.self) { try await s.get("missing", range: 0..<1) }
        #expect(e?.code == .objectNotFound)
    }

    func headPresentAndAbsent(_ s: any ObjectStore) async throws {
        #expect(try await s.head("hd/a") == nil)
        try await s.put("hd/a", ByteBuffer(bytes: bytes(count: 77, seed: 5)))
        let info = try #require(try await s.head("hd/a"))
        #expect(info.key == "hd/a")
        #expect(info.size == 77)
        #expect(!info.etag.isEmpty)
        #expect(try await s.head("hd/a") == info)  // unchanged object, same tag
        #expect(try await s.head("hd") == nil)  // a "directory" is not an object
        #expect(try await s.head("hd/a/b") == nil)  // below an object
    }

    func getMissing(_ s: any ObjectStore) async throws {
        for key in ["nope", "no/such/dir/obj"] {
            let e = await #expect(throws: WoodpeckerError.self) { try await s.get(key) }
            #expect(e?.code == .objectNotFound)
            #expect(e?.isRetryable == false)
            #expect(e?.message.contains(key) == true)
        }
        try await s.put("dir/obj", ByteBuffer(bytes: [1]))
        let e = await #expect(throws: WoodpeckerError.self) { try await s.get("dir") }
        #expect(e?.code == .objectNotFound)
    }

    func putIfAbsentTwice(_ s: any ObjectStore) async throws {
        let first = bytes(count: 64, seed: 6)
        try await s.putIfAbsent("pia/k", ByteBuffer(bytes: first))
        let e = await #expect(throws: WoodpeckerError.self) {
            try await s.putIfAbsent("pia/k", ByteBuffer(bytes: bytes(count: 64, seed: 7)))
        }
        #expect(e?.code == .objectAlreadyExists)
        #expect(try await s.get("pia/k").readableBytesArray == first)
        // A key written with plain put also blocks putIfAbsent; after delete it is free again.
        try await s.put("pia/p", ByteBuffer(bytes: [1]))
        await #expect(throws: WoodpeckerError.self) { try await s.putIfAbsent("pia/p", ByteBuffer(bytes: [2])) }
        try await s.delete("pia/p")
        try await s.putIfAbsent("pia/p", ByteBuffer(bytes: [3]))
        #expect(try await s.get("pia/p").readableBytesArray == [3])
    }

    func concurrentPutIfAbsent(_ s: any ObjectStore) async throws {
        let writers = 16
        let outcomes = try await withThrowingTaskGroup(of: (Int, WoodpeckerError.Code?).self) { group in
            for i in 0..<writers {
                group.addTask {
                    do {
                        try await s.putIfAbsent("race/k", ByteBuffer(bytes: Self.writerPayload(i)))
                        return (i, nil)
                    } catch let e as WoodpeckerError {
                        return (i, e.code)
                    }
                }
            }
            var all: [(Int, WoodpeckerError.Code?)] = []
            for try await o in group { all.append(o) }
            return all
        }
        let winners = outcomes.filter { $0.1 == nil }.map(\.0)
        #expect(winners.count == 1)
        #expect(outcomes.filter { $0.1 == .objectAlreadyExists }.count == writers - 1)
        let winner = try #require(winners.first)
        #expect(try await s.get("race/k").readableBytesArray == Self.writerPayload(winner))
    }

    func listPrefixAndPagination(_ s: any ObjectStore) async throws {
        let keys = (0..<25).map { "lp/seg/\(String(format2: $0)).blk" }
        for (i, k) in keys.shuffledDeterministically().enumerated() {
            try await s.put(k, ByteBuffer(bytes: bytes(count: i + 1, seed: UInt64(i))))
        }
        // Noise that must not show up.
        for k in ["lp/segment", "lq/seg/00.blk", "lp/se", "lp0"] { try await s.put(k, ByteBuffer(bytes: [0])) }

        var pages: [[String]] = []
        var token: String? = nil
        repeat {
            let page = try await s.list(prefix: "lp/seg/", continuationToken: token, limit: 7)
            pages.append(page.objects.map(\.key))
            #expect(page.objects.count <= 7)
            token = page.continuationToken
            #expect(pages.count <= 10)
        } while token != nil && pages.count <= 10
        #expect(pages.map(\.count) == [7, 7, 7, 4])
        #expect(pages.flatMap { $0 } == keys)

        let all = try await s.listAll(prefix: "lp/seg/", pageSize: 7)
        #expect(all.map(\.key) == keys)
        for info in all {
            #expect(try await s.head(info.key) == info)
        }
        // Exactly `limit` matches: one page, no token.
        let exact = try await s.list(prefix: "lp/seg/", continuationToken: keys[17], limit: 7)
        #expect(exact.objects.map(\.key) == Array(keys[18...]))
        #expect(exact.continuationToken == nil)

        let empty = try await s.list(prefix: "nothing/", continuationToken: nil, limit: 7)
        #expect(empty.objects.isEmpty)
        #expect(empty.continuationToken == nil)
        // A prefix that ends inside a name.
        #expect(try await s.listAll(prefix: "lp/se").map(\.key) == ["lp/se"] + keys + ["lp/segment"])
    }

    func listByteOrder(_ s: any ObjectStore) async throws {
        // '-' < '.' < '/' < '0': a directory's keys sort between its siblings, not before or after all of them.
        let keys = ["o/a-", "o/a.txt", "o/a/b", "o/a/c/d", "o/a0", "o/log1/x", "o/log10/y", "o/log2/z", "o/z"]
        for k in keys.reversed() { try await s.put(k, ByteBuffer(bytes: [1, 2])) }
        #expect(try await s.listAll(prefix: "o/").map(\.key) == keys)
        #expect(try await s.listAll(prefix: "o/log1").map(\.key) == ["o/log1/x", "o/log10/y"])
        #expect(try await s.listAll(prefix: "o/log1/").map(\.key) == ["o/log1/x"])
        #expect(try await s.listAll(prefix: "").map(\.key) == keys)
        // Page size 1 walks the same order.
        #expect(try await s.listAll(prefix: "o/", pageSize: 1).map(\.key) == keys)
        #expect(try await s.listAll(prefix: "o/", pageSize: 1).allSatisfy { $0.size == 2 })
    }

    func deleteIdempotent(_ s: any ObjectStore) async throws {
        try await s.delete("del/missing")
        try await s.put("del/k", ByteBuffer(bytes: [1, 2, 3]))
        try await s.delete("del/k")
        #expect(try await s.head("del/k") == nil)
        let e = await #expect(throws: WoodpeckerError.self) { try await s.get("del/k") }
        #expect(e?.code == .objectNotFound)
        try await s.delete("del/k")
        #expect(try await s.listAll(prefix: "del/").isEmpty)
    }

    func batchDelete(_ s: any ObjectStore) async throws {
        let keys = (0..<6).map { "bd/\($0 % 2)/k\($0)" }
        for k in keys { try await s.put(k, ByteBuffer(bytes: [7])) }
        try await s.delete(keys: [keys[1], keys[2], "bd/none", keys[5]])
        #expect(try await s.listAll(prefix: "bd/").map(\.key).sorted() == [keys[0], keys[3], keys[4]].sorted())
        try await s.delete(keys: [])
        try await s.delete(keys: keys)
        #expect(try await s.listAll(prefix: "bd/").isEmpty)
    }

    func nestedKeys(_ s: any ObjectStore) async throws {
        let keys = ["wal/7/3/0.blk", "wal/7/3/1.blk", "wal/7/3/footer.blk", "wal/7/3/m_0.blk", "wal/7/30/0.blk",
                    "wal/7/4/0.blk", "wal/a/b/c/d/e/f/g/deep"]
        for (i, k) in keys.enumerated() { try await s.put(k, ByteBuffer(bytes: bytes(count: 10 + i, seed: UInt64(i)))) }
        for (i, k) in keys.enumerated() {
            #expect(try await s.get(k).readableBytesArray == bytes(count: 10 + i, seed: UInt64(i)))
        }
        #expect(try await s.listAll(prefix: "wal/7/3/").map(\.key) == Array(keys[0..<4]))
        #expect(try await s.listAll(prefix: "wal/").map(\.key) == keys)
        #expect(try await s.listAll(prefix: "wal/7/3/", pageSize: 3).map(\.size) == [10, 11, 12, 13])
    }

    func invalidKeysRejected(_ s: any ObjectStore) async throws {
        for key in ["", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", ".", "..", "x/.wp-tmp.1"] {
            let e = await #expect(throws: WoodpeckerError.self, "put \(key)") { try await s.put(key, ByteBuffer(bytes: [1])) }
            #expect(e?.code == .invalidArgument)
            #expect(e?.message.contains("invalid object key") == true)
            await #expect(throws: WoodpeckerError.self) { try await s.putIfAbsent(key, ByteBuffer(bytes: [1])) }
            await #expect(throws: WoodpeckerError.self) { try await s.get(key) }
            await #expect(throws: WoodpeckerError.self) { _ = try await s.head(key) }
            await #expect(throws: WoodpeckerError.self) { try await s.delete(key) }
        }
        // Dots inside names are fine.
        try await s.put("a/.hidden/..x/b.c", ByteBuffer(bytes: [1]))
        #expect(try await s.get("a/.hidden/..x/b.c").readableBytesArray == [1])
        let e = await #expect(throws: WoodpeckerError.self) { _ = try await s.list(prefix: "", continuationToken: nil, limit: 0) }
        #expect(e?.code == .invalidArgument)
    }

    // MARK: helpers

    static func writerPayload(_ i: Int) -> [UInt8] {
        [UInt8](repeating: UInt8(i), count: 1000 + 37 * i)
    }
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
func bytes(count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension String {
    /// Zero-padded two-digit decimal.
    init(format2 n: Int) { self = n < 10 ? "0\(n)" : "\(n)" }
}

extension Array {
    func shuffledDeterministically() -> [Element] {
        var rng = SplitMix64(seed: 42)
        return shuffled(using: &rng)
    }
}
