import Synchronization
import WoodpeckerCore

/// An `ObjectStore` held in process memory: the real implementation used by fast tests and by embedded setups that
/// need no durability.
///
/// Guarantees: every operation is atomic under one mutex (so `putIfAbsent` has exactly one winner), listings are in
/// UTF-8 byte order, and each `put` produces a fresh etag (a store-wide counter). Nothing survives the process.
/// Memory is bounded only by what callers store.
public final class MemoryStore: ObjectStore {
    private struct Object {
        var data: ByteBuffer
        var etag: UInt64
    }

    private struct State {
        var objects: [String: Object] = [:]
        var nextEtag: UInt64 = 1
    }

    private let state = Mutex(State())
    public let description: String

    public init(name: String = "default") {
        description = "memory://\(name)"
    }

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        try ObjectKey.validate(key, store: description)
        let copy = data.copyOfReadableBytes()
        state.withLock { s in
            s.objects[key] = Object(data: copy, etag: s.nextEtag)
            s.nextEtag += 1
        }
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws {
        try ObjectKey.validate(key, store: description)
        let copy = data.copyOfReadableBytes()
        let inserted = state.withLock { s -> Bool in
            if s.objects[key] != nil { return false }
            s.objects[key] = Object(data: copy, etag: s.nextEtag)
            s.nextEtag += 1
            return true
        }
        if !inserted {
            throw WoodpeckerError(.objectAlreadyExists, "\(description): object \(key) already exists")
        }
    }

    public func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer {
        try ObjectKey.validate(key, store: description)
        guard let object = state.withLock({ $0.objects[key] }) else {
            throw WoodpeckerError(.objectNotFound, "\(description): object \(key) not found")
        }
        guard let range else { return object.data }
        let clipped = try clip(range, size: object.data.readableBytes, key: key)
        return ByteBuffer(bytes: try object.data.getBytes(at: clipped.lowerBound, length: clipped.count))
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        try ObjectKey.validate(key, store: description)
        return state.withLock { s in
            s.objects[key].map { ObjectInfo(key: key, size: $0.data.readableBytes, etag: String($0.etag, radix: 16)) }
        }
    }

    public func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage {
        guard limit > 0 else {
            throw WoodpeckerError(.invalidArgument, "\(description): list limit must be positive, got \(limit)")
        }
        let matching = state.withLock { s in
            s.objects.compactMap { key, object -> ObjectInfo? in
                guard ObjectKey.hasPrefix(key, prefix) else { return nil }
                if let token = continuationToken, !ObjectKey.less(token, key) { return nil }
                return ObjectInfo(key: key, size: object.data.readableBytes, etag: String(object.etag, radix: 16))
            }
        }.sorted { ObjectKey.less($0.key, $1.key) }
        let page = Array(matching.prefix(limit))
        return ObjectListPage(objects: page, continuationToken: matching.count > limit ? page.last?.key : nil)
    }

    public func delete(_ key: String) async throws {
        try ObjectKey.validate(key, store: description)
        _ = state.withLock { $0.objects.removeValue(forKey: key) }
    }

    public func delete(keys: [String]) async throws {
        for key in keys { try ObjectKey.validate(key, store: description) }
        state.withLock { s in
            for key in keys { s.objects.removeValue(forKey: key) }
        }
    }
}

/// Clips a requested byte range to an object of `size` bytes (the `ObjectStore.get` contract).
func clip(_ range: Range<Int>, size: Int, key: String) throws -> Range<Int> {
    guard range.lowerBound >= 0 else {
        throw WoodpeckerError(.invalidArgument, "get \(key): range \(range) starts before 0")
    }
    let lower = min(range.lowerBound, size)
    return lower..<max(lower, min(range.upperBound, size))
}
