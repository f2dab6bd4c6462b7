import WoodpeckerCore

/// What `head` and `list` report about one object.
public struct ObjectInfo: Sendable, Equatable {
    public var key: String
    public var size: Int
    /// Opaque version tag (S3 ETag, or size+mtime for files). Equal tags mean equal content.
    public var etag: String
    public init(key: String, size: Int, etag: String) {
        self.key = key
        self.size = size
        self.etag = etag
    }
}

/// One page of a prefix listing, keys in ascending byte order.
public struct ObjectListPage: Sendable {
    public var objects: [ObjectInfo]
    /// Pass to the next `list` call; nil when this is the last page.
    public var continuationToken: String?
    public init(objects: [ObjectInfo], continuationToken: String?) {
        self.objects = objects
        self.continuationToken = continuationToken
    }
}

/// Flat key → bytes storage: local files, memory, or S3. Keys are `/`-separated relative paths without `..`.
///
/// Guarantees every implementation gives (checked by the shared conformance suite):
/// - `put` is atomic: a reader sees the old object, the whole new object, or nothing; never a prefix.
/// - Once `put`/`putIfAbsent` returns, the object is durable (fsync'd, or acknowledged by S3).
/// - `putIfAbsent` succeeds for exactly one of any number of concurrent writers of a key; the others get
///   `WoodpeckerError(.objectAlreadyExists)`.
/// - `get` of a missing key throws `.objectNotFound`; a range past the end is clipped, a range starting past the
///   end returns empty bytes.
/// - `list` returns keys with the prefix in ascending order, at most `limit` per page.
/// - `delete` of a missing key succeeds (idempotent).
/// Errors name the store, the key and what to do; `isRetryable` says whether trying again may help.
public protocol ObjectStore: Sendable {
    /// A short description for logs and errors, e.g. `file:///var/lib/wp` or `s3://bucket/prefix`.
    var description: String { get }
    func put(_ key: String, _ data: ByteBuffer) async throws
    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws
    /// `putIfAbsent` of the buffers back to back; stores that can send them without concatenating do so.
    func putIfAbsent(_ key: String, parts: [ByteBuffer]) async throws
    /// Whole object when `range` is nil; else the bytes in `range` (clipped at the end of the object).
    func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer
    /// nil when the object does not exist.
    func head(_ key: String) async throws -> ObjectInfo?
    func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage
    func delete(_ key: String) async throws
    /// Deletes many keys; missing ones are ignored.
    func delete(keys: [String]) async throws
}

extension ObjectStore {
    public func get(_ key: String) async throws -> ByteBuffer { try await get(key, range: nil) }

    public func putIfAbsent(_ key: String, parts: [ByteBuffer]) async throws {
        if parts.count == 1 { return try await putIfAbsent(key, parts[0]) }
        var body = ByteBuffer(capacity: parts.reduce(0) { $0 + $1.readableBytes })
        for p in parts { body.writeBuffer(p) }
        try await putIfAbsent(key, body)
    }

    public func delete(keys: [String]) async throws {
        for k in keys { try await delete(k) }
    }

    /// Every object under `prefix`, following continuation tokens.
    public func listAll(prefix: String, pageSize: Int = Limits.listPageSize) async throws -> [ObjectInfo] {
        var out: [ObjectInfo] = []
        var token: String? = nil
        repeat {
            let page = try await list(prefix: prefix, continuationToken: token, limit: pageSize)
            out.append(contentsOf: page.objects)
            token = page.continuationToken
        } while token != nil
        return out
    }
}
