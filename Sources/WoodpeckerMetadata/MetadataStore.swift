import WoodpeckerCore

/// One key with its value and revisions, as etcd reports them.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// Store revision at which the key was created (0 = absent, in comparisons).
    public var createRevision: Int64
    /// Store revision of the last change to the key.
    public var modRevision: Int64
    /// Number of changes since creation (1 after the first put).
    public var version: Int64
    /// Lease the key is attached to (0 = none).
    public var lease: Int64
    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
    public var stringValue: String { String(decoding: value, as: UTF8.self) }
}

/// A condition of a transaction, evaluated atomically with its operations (etcd `Compare`).
public struct Compare: Sendable, Equatable {
    public enum Target: Sendable, Equatable {
        case createRevision(Int64)
        case modRevision(Int64)
        case version(Int64)
        case value([UInt8])
    }
    public enum Op: Sendable, Equatable { case equal, notEqual, greater, less }
    public var key: String
    public var target: Target
    public var op: Op
    public init(key: String, _ target: Target, _ op: Op = .equal) {
        self.key = key
        self.target = target
        self.op = op
    }
    /// The key does not exist (create-if-absent guard).
    public static func absent(_ key: String) -> Compare { Compare(key: key, .createRevision(0)) }
    /// The key exists.
    public static func exists(_ key: String) -> Compare { Compare(key: key, .createRevision(0), .greater) }
    /// The key is unchanged since `revision` (compare-and-swap guard).
    public static func unchanged(_ key: String, modRevision: Int64) -> Compare { Compare(key: key, .modRevision(modRevision)) }
}

/// An operation in a transaction branch.
public enum TxnOp: Sendable, Equatable {
    case put(key: String, value: [UInt8], lease: Int64 = 0)
    case delete(key: String)
    /// Deletes every key starting with the prefix.
    case deletePrefix(String)
    case get(key: String)
}

/// What a transaction did.
public struct TxnResult: Sendable {
    /// True when every compare held and the `then` branch ran; false when the `else` branch ran.
    public var succeeded: Bool
    /// Store revision after the transaction.
    public var revision: Int64
    /// For each `.get` in the branch that ran, in order: the key's value, or nil if absent.
    public var gets: [KeyValue?]
    public init(succeeded: Bool, revision: Int64, gets: [KeyValue?]) {
        self.succeeded = succeeded
        self.revision = revision
        self.gets = gets
    }
}

/// One change seen by a watch.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case put, delete }
    public var kind: Kind
    /// For a delete: the key with an empty value and the deletion's modRevision.
    public var kv: KeyValue
    public init(kind: Kind, kv: KeyValue) {
        self.kind = kind
        self.kv = kv
    }
}

/// A live prefix watch. Events arrive in revision order with none missed; `cancel()` ends the stream.
public protocol MetadataWatch: Sendable {
    var events: AsyncThrowingStream<WatchEvent, any Error> { get }
    func cancel()
}

/// Revisioned key-value metadata with etcd semantics: a single global revision counter, compare-and-swap
/// transactions, leases with TTL, prefix watches. Implemented by `EmbeddedMetadataStore` (one machine, durable
/// journal) and `EtcdMetadataStore`; both pass the same conformance suite.
///
/// Errors are `WoodpeckerError`: `.metadataUnavailable` (retryable) when the store cannot be reached,
/// `.metadataCorrupted` for undecodable state; each names the key and the store.
public protocol MetadataStore: Sendable {
    var description: String { get }
    func get(_ key: String) async throws -> KeyValue?
    /// Keys starting with `prefix` in ascending order, at most `limit` (0 = no limit).
    func range(prefix: String, limit: Int) async throws -> [KeyValue]
    /// Unconditional put; returns the new revision.
    @discardableResult
    func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64
    /// Returns true if the key existed.
    @discardableResult
    func delete(_ key: String) async throws -> Bool
    /// Atomically: if every compare holds, run `then`, else run `else`.
    func txn(compare: [Compare], then: [TxnOp], else: [TxnOp]) async throws -> TxnResult

    /// Grants a lease with the TTL in seconds; returns its id.
    func grantLease(ttlSeconds: Int64) async throws -> Int64
    /// Renews a lease; throws `.keyNotFound` if it has expired or was revoked.
    func keepAlive(lease: Int64) async throws
    /// Revokes a lease and deletes its keys.
    func revokeLease(_ lease: Int64) async throws
    /// Remaining TTL in seconds, or nil if the lease no longer exists.
    func leaseTimeToLive(_ lease: Int64) async throws -> Int64?

    /// Watches every key with `prefix`, starting after revision `fromRevision` (0 = only future changes).
    ///
    /// Exactly: the stream delivers every change with revision > `fromRevision` (etcd's inclusive
    /// `start_revision` is `fromRevision + 1`), in revision order and, within one revision, in operation order,
    /// with none missed. To follow a prefix without a gap: `let r = try await readRevision()`, then `range`, then
    /// `watch(prefix:fromRevision: r)` (events already reflected in the range may arrive again; compare
    /// `modRevision`). Throws `.revisionConflict` whose message says "compacted" when `fromRevision` is older than
    /// the history the store keeps: read again and watch from the new revision. The stream ends with retryable
    /// `.bufferFull` when the consumer falls too far behind (watch again from the last revision received), and with
    /// an error when the store closes or fails.
    func watch(prefix: String, fromRevision: Int64) async throws -> any MetadataWatch
    func close() async
}

extension MetadataStore {
    public func range(prefix: String) async throws -> [KeyValue] { try await range(prefix: prefix, limit: 0) }
    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws -> Int64 { try await put(key, value, lease: 0) }
    public func txn(compare: [Compare], then: [TxnOp]) async throws -> TxnResult {
        try await txn(compare: compare, then: then, else: [])
    }
    /// The store's current revision (an empty, read-only transaction: no revision bump).
    public func readRevision() async throws -> Int64 {
        try await txn(compare: [], then: [], else: []).revision
    }
}
