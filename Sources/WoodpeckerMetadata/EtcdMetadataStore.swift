import Synchronization
import WoodpeckerCore
import WoodpeckerIO

/// A `MetadataStore` on an etcd v3 cluster (3.4 or later), spoken through etcd's JSON gateway (`/v3/...`) with the
/// project's `HTTPClient` on `loop`.
///
/// Guarantees:
/// - keys are used verbatim (the caller adds its prefix, see `parse(url:)`); values are opaque bytes;
/// - every call has a deadline (`Options.requestTimeoutMs`, failover included);
/// - endpoints are tried in turn while they cannot be reached; a write whose request may have reached etcd is not
///   repeated elsewhere but fails with retryable `.metadataUnavailable` ("outcome unknown");
/// - errors name the endpoint and the key: unreachable → retryable `.metadataUnavailable`; undecodable response
///   → `.metadataCorrupted`; failed authentication → non-retryable `.invalidArgument`; a missing lease →
///   `.keyNotFound`;
/// - with a user and password, a token is obtained from `/v3/auth/authenticate` and renewed when etcd rejects it;
/// - watches reconnect after a dropped stream from the revision after the last one delivered, so no event is
///   missed or repeated; `watch` throws `.revisionConflict` ("compacted") when `fromRevision` is gone, and a
///   watch ends with the same error when the revision to resume from is gone, and with
///   `.metadataUnavailable` when no endpoint answers for `watchReconnectTimeoutMs`.
///
/// Each open watch holds one HTTP connection; `maxConcurrentRequests` bounds watches plus calls in flight.
public final class EtcdMetadataStore: MetadataStore {
    public struct Options: Sendable {
        /// Deadline of each call, including failover to other endpoints.
        public var requestTimeoutMs: UInt64 = 10_000
        /// Deadline to open a TCP (and TLS) connection to one endpoint.
        public var connectTimeoutMs: UInt64 = 2_000
        public var username: String?
        public var password: String?
        /// A watch whose stream dropped gives up after this long without reaching any endpoint.
        public var watchReconnectTimeoutMs: UInt64 = 60_000
        /// Events buffered per watch before a slow consumer's stream ends with `.bufferFull`.
        public var watchBufferEvents = 4_096
        /// Largest single watch message accepted (etcd batches up to 1000 revisions in one).
        public var maxWatchMessageBytes = 64 * 1024 * 1024
        /// Calls in flight plus open watches; more calls wait in a queue.
        public var maxConcurrentRequests = 64
        public init() {}
    }

    /// What an `etcd://` URL names.
    public struct Location: Sendable, Equatable {
        /// Base URLs, e.g. "http://127.0.0.1:2379".
        public var endpoints: [String]
        /// Key prefix: the URL path without its leading "/", ending in "/" unless empty.
        public var prefix: String
        public var username: String?
        public var password: String?
    }

    public let description: String
    public let endpoints: [String]
    let options: Options
    let connection: EtcdConnection
    private let http: HTTPClient
    private let watches = Mutex<(next: UInt64, open: [UInt64: EtcdWatch], closed: Bool)>((0, [:], false))

    /// `endpoints` are base URLs ("http://host:2379", "https://host:2379"); a bare "host:port" means http.
    public init(endpoints: [String], loop: EventLoop, options: Options = Options()) {
        precondition(!endpoints.isEmpty, "EtcdMetadataStore needs at least one endpoint")
        let urls = endpoints.map { e -> String in
            var u = e.contains("://") ? e : "http://" + e
            while u.hasSuffix("/") { u.removeLast() }
            return u
        }
        self.endpoints = urls
        self.options = options
        description = "EtcdMetadataStore(\(urls.joined(separator: ",")))"
        var config = HTTPClient.Configuration()
        config.maxConcurrentTransfers = options.maxConcurrentRequests
        config.connectTimeoutMs = options.connectTimeoutMs
        config.maxStreamBufferedBytes = max(1024 * 1024, min(options.maxWatchMessageBytes, 8 * 1024 * 1024))
        http = HTTPClient(loop: loop, configuration: config)
        var credentials: EtcdConnection.Credentials?
        if let user = options.username {
            credentials = EtcdConnection.Credentials(username: user, password: options.password ?? "")
        }
        connection = EtcdConnection(endpoints: urls, http: http, credentials: credentials,
                                    requestTimeoutMs: options.requestTimeoutMs, storeName: description)
    }

    /// Parses "etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/PREFIX" ("etcds://" for https endpoints).
    public static func parse(url: String) throws -> Location {
        let scheme: String
        var rest: Substring
        if url.hasPrefix("etcd://") {
            scheme = "http"
            rest = url.dropFirst("etcd://".count)
        } else if url.hasPrefix("etcds://") {
            scheme = "https"
            rest = url.dropFirst("etcds://".count)
        } else {
            throw WoodpeckerError(.invalidArgument, "metadata URL '\(url)' must start with etcd:// or etcds://")
        }
        var user: String?
        var password: String?
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<slash].lastIndex(of: "@") {
            let creds = rest[..<at]
            let colon = creds.firstIndex(of: ":") ?? creds.endIndex
            user = String(creds[..<colon])
            password = colon < creds.endIndex ? String(creds[creds.index(after: colon)...]) : ""
            rest = rest[rest.index(after: at)...]
        }
        let hostEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let hosts = rest[..<hostEnd].split(separator: ",", omittingEmptySubsequences: false)
        var endpoints: [String] = []
        for h in hosts {
            guard let colon = h.lastIndex(of: ":"), colon > h.startIndex,
                  let port = Int(h[h.index(after: colon)...]), (1...65535).contains(port)
            else {
                throw WoodpeckerError(.invalidArgument, "metadata URL '\(url)': '\(h)' is not HOST:PORT")
            }
            endpoints.append("\(scheme)://\(h)")
        }
        var prefix = hostEnd < rest.endIndex ? String(rest[rest.index(after: hostEnd)...]) : ""
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
        return Location(endpoints: endpoints, prefix: prefix, username: user, password: password)
    }

    // MARK: key-value

    public func get(_ key: String) async throws -> KeyValue? {
        let subject = "key '\(key)'"
        let o = try await connection.call("/v3/kv/range", ["key": EtcdJSON.base64(key)], subject: subject,
                                          idempotent: true)
        return try decodeKVs(o, subject: subject, path: "/v3/kv/range").first
    }

    public func range(prefix: String, limit: Int) async throws -> [KeyValue] {
        precondition(limit >= 0, "range limit must be >= 0")
        let subject = "prefix '\(prefix)'"
        var body = rangeBody(prefix: prefix)
        body["limit"] = String(limit)
        body["sort_order"] = "ASCEND"
        body["sort_target"] = "KEY"
        let o = try await connection.call("/v3/kv/range", body, subject: subject, idempotent: true)
        return try decodeKVs(o, subject: subject, path: "/v3/kv/range")
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 {
        let subject = "key '\(key)'"
        var body: [String: Any] = ["key": EtcdJSON.base64(key), "value": EtcdJSON.base64(value)]
        if lease != 0 { body["lease"] = String(lease) }
        let o = try await connection.call("/v3/kv/put", body, subject: subject, idempotent: false)
        return try revision(o, subject: subject, path: "/v3/kv/put")
    }

    @discardableResult
    public func delete(_ key: String) async throws -> Bool {
        let subject = "key '\(key)'"
        let o = try await connection.call("/v3/kv/deleterange", ["key": EtcdJSON.base64(key)], subject: subject,
                                          idempotent: false)
        guard let deleted = o.int64("deleted") else {
            throw corrupted(subject: subject, path: "/v3/kv/deleterange", what: "'deleted' is not an integer")
        }
        return deleted > 0
    }

    public func txn(compare: [Compare], then: [TxnOp], else elseOps: [TxnOp]) async throws -> TxnResult {
        let keys = Set(compare.map(\.key) + (then + elseOps).map(\.key)).sorted()
        let subject = keys.count == 1 ? "key '\(keys[0])'" : "keys \(keys.prefix(4).map { "'\($0)'" }.joined(separator: ", "))\(keys.count > 4 ? "…" : "")"
        var body: [String: Any] = [:]
        if !compare.isEmpty { body["compare"] = compare.map(Self.encode) }
        if !then.isEmpty { body["success"] = then.map(Self.encode) }
        if !elseOps.isEmpty { body["failure"] = elseOps.map(Self.encode) }
        let readOnly = !(then + elseOps).contains { if case .get = $0 { false } else { true } }
        let path = "/v3/kv/txn"
        let o = try await connection.call(path, body, subject: subject, idempotent: readOnly)
        let succeeded = o.bool("succeeded")  // omitted when false
        let rev = try revision(o, subject: subject, path: path)
        var gets: [KeyValue?] = []
        for r in o.objects("responses") {
            guard let range = r.object("response_range") else { continue }
            gets.append(try decodeKVs(range, subject: subject, path: path).first)
        }
        let expected = (succeeded ? then : elseOps).filter { if case .get = $0 { true } else { false } }.count
        guard gets.count == expected else {
            throw corrupted(subject: subject, path: path, what: "\(gets.count) range responses for \(expected) gets")
        }
        return TxnResult(succeeded: succeeded, revision: rev, gets: gets)
    }

    // MARK: leases

    public func grantLease(ttlSeconds: Int64) async throws -> Int64 {
        let subject = "a lease of \(ttlSeconds) s"
        let path = "/v3/lease/grant"
        let o = try await connection.call(path, ["TTL": String(ttlSeconds)], subject: subject, idempotent: false)
        if let e = o.string("error"), !e.isEmpty {
            throw WoodpeckerError(.invalidArgument, "\(description): \(path) for \(subject): \(e)")
        }
        guard let id = o.int64("ID"), id != 0 else {
            throw corrupted(subject: subject, path: path, what: "no lease ID")
        }
        return id
    }

    public func keepAlive(lease: Int64) async throws {
        let subject = "lease \(lease)"
        let path = "/v3/lease/keepalive"
        let o = try await connection.call(path, ["ID": String(lease)], subject: subject, idempotent: true)
        if let e = o.object("error") {
            throw connection.mapError(code: e.int64("code") ?? 0, message: e.string("message") ?? "unknown error",
                                      endpoint: "", path: path, subject: subject)
        }
        guard let result = o.object("result"), let ttl = result.int64("TTL") else {
            throw corrupted(subject: subject, path: path, what: "no result")
        }
        // etcd answers a keepalive for an unknown lease with TTL 0 (omitted).
        guard ttl > 0 else { throw leaseNotFound(lease) }
    }

    public func revokeLease(_ lease: Int64) async throws {
        _ = try await connection.call("/v3/lease/revoke", ["ID": String(lease)], subject: "lease \(lease)",
                                      idempotent: false)
    }

    public func leaseTimeToLive(_ lease: Int64) async throws -> Int64? {
        let subject = "lease \(lease)"
        let path = "/v3/lease/timetolive"
        let o = try await connection.call(path, ["ID": String(lease)], subject: subject, idempotent: true)
        guard let ttl = o.int64("TTL") else { throw corrupted(subject: subject, path: path, what: "'TTL' is not an integer") }
        return ttl < 0 ? nil : ttl
    }

    // MARK: watches

    public func watch(prefix: String, fromRevision: Int64) async throws -> any MetadataWatch {
        precondition(fromRevision >= 0, "fromRevision must be >= 0")
        let id = try watches.withLock { w -> UInt64 in
            if w.closed { throw WoodpeckerError(.clientClosed, "\(description) is closed") }
            w.next += 1
            return w.next
        }
        if fromRevision > 0 { try await checkNotCompacted(prefix: prefix, revision: fromRevision + 1) }
        let stream = try await EtcdWatchStream.open(connection: connection, prefix: prefix,
                                                    startRevision: fromRevision + 1,
                                                    maxMessageBytes: options.maxWatchMessageBytes)
        let watch = EtcdWatch(stream: stream, prefix: prefix, fromRevision: fromRevision, options: options,
                              connection: connection) { [weak self] in
            self?.watches.withLock { _ = $0.open.removeValue(forKey: id) }
        }
        let closed = watches.withLock { w -> Bool in
            if !w.closed { w.open[id] = watch }
            return w.closed
        }
        if closed {
            watch.fail(WoodpeckerError(.clientClosed, "\(description) was closed"))
        } else {
            watch.start(loop: http.loop)
        }
        return watch
    }

    /// Throws `.revisionConflict` ("compacted") when `revision` is no longer kept. etcd itself first confirms a
    /// watch and only then cancels it for compaction, so without this check the error would reach the caller
    /// through the stream instead of from `watch`. A compaction right after the check still ends the stream.
    private func checkNotCompacted(prefix: String, revision: Int64) async throws {
        var body = rangeBody(prefix: prefix)
        body["revision"] = String(revision)
        body["count_only"] = true
        do {
            _ = try await connection.call("/v3/kv/range", body, subject: "watch on prefix '\(prefix)' from revision \(revision)",
                                          idempotent: true)
        } catch let e as WoodpeckerError where e.code == .revisionConflict {
            throw WoodpeckerError(.revisionConflict,
                                  "\(e.message) (compacted); read the current state with range and watch from its revision")
        } catch let e as WoodpeckerError where e.message.contains("future revision") {
            return  // a watch may start after the current revision
        }
    }

    /// Ends every watch with `.clientClosed` and closes the HTTP connections. Idempotent.
    public func close() async {
        let open = watches.withLock { w -> [EtcdWatch] in
            w.closed = true
            defer { w.open.removeAll() }
            return Array(w.open.values)
        }
        for w in open { w.fail(WoodpeckerError(.clientClosed, "\(description) was closed")) }
        await http.close()
    }

    // MARK: encoding

    private func rangeBody(prefix: String) -> [String: Any] {
        let p = Array(prefix.utf8)
        return ["key": EtcdJSON.base64(p.isEmpty ? [0] : p), "range_end": EtcdJSON.base64(EtcdJSON.prefixEnd(p))]
    }

    private static func encode(_ c: Compare) -> [String: Any] {
        var o: [String: Any] = ["key": EtcdJSON.base64(c.key)]
        switch c.target {
        case let .createRevision(r): o["target"] = "CREATE"; o["create_revision"] = String(r)
        case let .modRevision(r): o["target"] = "MOD"; o["mod_revision"] = String(r)
        case let .version(v): o["target"] = "VERSION"; o["version"] = String(v)
        case let .value(v): o["target"] = "VALUE"; o["value"] = EtcdJSON.base64(v)
        }
        switch c.op {
        case .equal: o["result"] = "EQUAL"
        case .notEqual: o["result"] = "NOT_EQUAL"
        case .greater: o["result"] = "GREATER"
        case .less: o["result"] = "LESS"
        }
        return o
    }

    private static func encode(_ op: TxnOp) -> [String: Any] {
        switch op {
        case let .put(key, value, lease):
            var p: [String: Any] = ["key": EtcdJSON.base64(key), "value": EtcdJSON.base64(value)]
            if lease != 0 { p["lease"] = String(lease) }
            return ["request_put": p]
        case let .delete(key):
            return ["request_delete_range": ["key": EtcdJSON.base64(key)]]
        case let .deletePrefix(prefix):
            let p = Array(prefix.utf8)
            return ["request_delete_range": ["key": EtcdJSON.base64(p.isEmpty ? [0] : p),
                                             "range_end": EtcdJSON.base64(EtcdJSON.prefixEnd(p))]]
        case let .get(key):
            return ["request_range": ["key": EtcdJSON.base64(key)]]
        }
    }

    // MARK: decoding

    private func decodeKVs(_ o: EtcdObject, subject: String, path: String) throws -> [KeyValue] {
        guard let kvs = EtcdJSON.keyValues(o) else { throw corrupted(subject: subject, path: path, what: "a key-value does not decode") }
        return kvs
    }

    private func revision(_ o: EtcdObject, subject: String, path: String) throws -> Int64 {
        guard let r = o.headerRevision else { throw corrupted(subject: subject, path: path, what: "'header.revision' is not an integer") }
        return r
    }

    private func corrupted(subject: String, path: String, what: String) -> WoodpeckerError {
        WoodpeckerError(.metadataCorrupted,
                        "\(description): \(path) for \(subject): undecodable response from \(connection.endpoints[connection.endpointOrder()[0]]): \(what)")
    }

    private func leaseNotFound(_ lease: Int64) -> WoodpeckerError {
        WoodpeckerError(.keyNotFound, "\(description): lease \(lease) not found (expired or revoked); grant a new lease")
    }
}

extension TxnOp {
    var key: String {
        switch self {
        case let .put(key, _, _), let .delete(key), let .get(key): key
        case let .deletePrefix(p): p
        }
    }
}
