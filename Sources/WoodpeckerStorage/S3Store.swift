import Synchronization
import WoodpeckerCore
import WoodpeckerIO

/// An `ObjectStore` on an S3-compatible service (AWS S3, MinIO, SeaweedFS), over `HTTPClient` (libcurl multi on
/// the store's `EventLoop`), with its own SigV4 signing (`S3Signer`).
///
/// Guarantees, beyond the `ObjectStore` contract:
/// - `put` is one PUT up to `multipartThresholdBytes`, above it a multipart upload (parts in parallel, at most
///   `multipartConcurrency` at once) that is aborted if any step fails: the key shows the old object or the
///   whole new one.
/// - `putIfAbsent` is a PUT with `If-None-Match: *`; 412 means `.objectAlreadyExists`. When an earlier attempt of
///   the same call may have been applied (a timeout, a reset, a 5xx) and a retry then gets 412, the stored object
///   is read back: equal bytes count as success, so a retry never turns our own write into a conflict.
/// - Requests that may pass on a second try (5xx, 429/SlowDown, 409 ConditionalRequestConflict, timeouts, refused
///   or reset connections) are retried per `S3Config.retry` with exponential backoff and jitter; other 4xx fail
///   at once. At most `maxConcurrentRequests` requests run at once.
/// - Errors name the object (`s3://bucket/key`), the HTTP status and the S3 error code, e.g.
///   `s3://wal/seg/0.blk: 403 SignatureDoesNotMatch: ...`, and say whether a retry may help.
/// - `list` continuation tokens are the last key returned (ListObjectsV2 `start-after`), so they stay valid
///   across store instances. Listing order is the server's: AWS S3 and MinIO list in byte order; SeaweedFS
///   walks directories, so a "directory" `a/` is listed before a sibling like `a-` or `a.txt` (keys made of
///   digits, letters, `_` and `.blk` suffixes — Woodpecker's layout — are unaffected).
///
/// Call `close()` before shutting the loop down.
public final class S3Store: ObjectStore {
    public let config: S3Config
    public let loop: EventLoop
    public let description: String
    private let http: HTTPClient
    private let signer: S3Signer
    private let scheme: String
    /// `host[:port]` of the endpoint.
    private let authority: String
    /// Set once a server answered batch delete with "not implemented"; later batches use single deletes.
    private let batchDeleteUnsupported = Atomic<Bool>(false)

    /// Throws `.invalidArgument` when the config is incomplete (see `S3Config.validate`).
    public init(config: S3Config, loop: EventLoop) throws {
        try config.validate()
        self.config = config
        self.loop = loop
        description = "s3://\(config.bucket)\(config.keyPrefix.isEmpty ? "" : "/" + config.keyPrefix)"
        var httpConfig = HTTPClient.Configuration()
        httpConfig.maxConcurrentTransfers = config.maxConcurrentRequests
        httpConfig.connectTimeoutMs = config.connectTimeoutMs
        httpConfig.maxResponseBodyBytes = config.maxResponseBodyBytes
        httpConfig.maxCachedConnections = max(httpConfig.maxCachedConnections, config.maxConcurrentRequests)
        http = HTTPClient(loop: loop, configuration: httpConfig)
        signer = S3Signer(credentials: config.credentials, region: config.region)
        let parts = config.endpoint.split(separator: "://", maxSplits: 1)
        scheme = String(parts[0])
        authority = String(parts[1])
    }

    /// Ends queued and running requests and releases the HTTP client's loop handles. Idempotent.
    public func close() async {
        await http.close()
    }

    // MARK: ObjectStore

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        let full = try objectKey(key)
        if data.readableBytes > config.multipartThresholdBytes {
            try await multipartPut(full, data)
            return
        }
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/octet-stream")
        _ = try await send(S3Request(method: "PUT", key: full, headers: headers, body: data))
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws {
        let full = try objectKey(key)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/octet-stream")
        headers.add("If-None-Match", "*")
        let outcome = try await send(S3Request(method: "PUT", key: full, headers: headers, body: data), accept: [412])
        guard outcome.response.status == 412 else { return }
        let conflict = WoodpeckerError(.objectAlreadyExists,
                                       "\(uri(full)): already exists (412 PreconditionFailed on If-None-Match: *)")
        guard outcome.earlierAttemptMayHaveApplied else { throw conflict }
        // An earlier attempt may have stored our bytes before failing on the way back: read them back.
        let stored: ByteBuffer
        do {
            stored = try await get(key, range: nil)
        } catch let e as WoodpeckerError where e.code == .objectNotFound {
            throw conflict  // deleted in between: someone else's object was there
        }
        if stored != data { throw conflict }
    }

    public func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer {
        let full = try objectKey(key)
        var headers = HTTPHeaders()
        if let r = range {
            precondition(r.lowerBound >= 0, "S3Store.get: negative range start")
            if r.isEmpty {
                guard try await head(key) != nil else { throw notFound(full, detail: "404 (HEAD)") }
                return ByteBuffer()
            }
            headers.add("Range", "bytes=\(r.lowerBound)-\(r.upperBound - 1)")
        }
        let outcome = try await send(S3Request(method: "GET", key: full, headers: headers), accept: [416])
        let response = outcome.response
        switch response.status {
        case 416:
            return ByteBuffer()  // the range starts at or past the end
        case 200 where range != nil:
            // The server ignored the Range header: clip ourselves.
            let body = response.body
            let lo = min(range!.lowerBound, body.readableBytes)
            let hi = min(range!.upperBound, body.readableBytes)
            return try body.getSlice(at: body.readerIndex + lo, length: hi - lo)
        default:
            return response.body
        }
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        let full = try objectKey(key)
        let outcome = try await send(S3Request(method: "HEAD", key: full), accept: [404])
        let r = outcome.response
        guard r.status != 404 else { return nil }
        guard let length = r.headers["Content-Length"].flatMap({ Int($0) }) else {
            throw WoodpeckerError(.ioFailure, "\(uri(full)): HEAD \(r.status) without a valid Content-Length")
        }
        return ObjectInfo(key: key, size: length, etag: Self.unquote(r.headers["ETag"] ?? ""))
    }

    public func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage {
        guard limit > 0 else {
            throw WoodpeckerError(.invalidArgument, "\(description): list limit must be positive, got \(limit)")
        }
        guard !prefix.utf8.contains(0) else {
            throw WoodpeckerError(.invalidArgument, "\(description): list prefix contains a NUL byte")
        }
        let base = config.keyPrefix.isEmpty ? "" : config.keyPrefix + "/"
        // One extra key tells whether another page follows, whatever the server says about truncation.
        let maxKeys = min(limit + 1, 1000)
        var query = [("list-type", "2"), ("prefix", base + prefix), ("max-keys", String(maxKeys))]
        if let token = continuationToken { query.append(("start-after", base + token)) }
        let outcome = try await send(S3Request(method: "GET", key: nil, query: query))
        let xml = S3XML(outcome.response.body.readableBytesArray)
        var objects: [ObjectInfo] = []
        var lastSeen: String? = nil
        for entry in xml.elements("Contents") {
            guard let raw = entry.text("Key"), raw.utf8.starts(with: (base + prefix).utf8) else { continue }
            let key = String(decoding: raw.utf8.dropFirst(base.utf8.count), as: UTF8.self)
            if objects.count == limit { return ObjectListPage(objects: objects, continuationToken: lastSeen) }
            lastSeen = key
            // Directory markers ("a/") and other names that are not valid keys are not objects of this store.
            guard (try? ObjectKey.validate(key, store: description)) != nil else { continue }  // skipped on purpose
            guard let size = entry.text("Size").flatMap({ Int($0) }) else {
                throw WoodpeckerError(.ioFailure, "\(uri(raw)): ListObjectsV2 entry without a valid Size")
            }
            objects.append(ObjectInfo(key: key, size: size, etag: Self.unquote(entry.text("ETag") ?? "")))
        }
        let truncated = xml.text("IsTruncated") == "true"
        return ObjectListPage(objects: objects, continuationToken: truncated ? lastSeen : nil)
    }

    public func delete(_ key: String) async throws {
        let full = try objectKey(key)
        _ = try await send(S3Request(method: "DELETE", key: full), accept: [404])
    }

    /// DeleteObjects (`POST ?delete`, up to 1000 keys per request, with Content-MD5); when the server rejects
    /// it (400/405/501), single DELETEs instead, from then on.
    public func delete(keys: [String]) async throws {
        let full = try keys.map { try objectKey($0) }
        var start = 0
        while start < full.count {
            let chunk = Array(full[start..<min(start + 1000, full.count)])
            start += chunk.count
            if batchDeleteUnsupported.load(ordering: .relaxed) || chunk.count == 1 {
                try await deleteOneByOne(chunk)
            } else {
                try await deleteBatch(chunk)
            }
        }
    }

    // MARK: bucket and capability checks

    /// Creates the bucket unless it exists (and is ours). Safe to call concurrently and repeatedly.
    public func createBucketIfMissing() async throws {
        let probe = try await send(S3Request(method: "HEAD", key: nil), accept: [404])
        guard probe.response.status == 404 else { return }
        var body: ByteBuffer? = nil
        if config.region != "us-east-1" {
            body = ByteBuffer(string: "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                + "<LocationConstraint>\(S3XML.escape(config.region))</LocationConstraint></CreateBucketConfiguration>")
        }
        let outcome = try await send(S3Request(method: "PUT", key: nil, body: body), accept: [409])
        if outcome.response.status == 409 {
            let code = S3XML(outcome.response.body.readableBytesArray).text("Code") ?? ""
            guard code == "BucketAlreadyOwnedByYou" else {
                throw WoodpeckerError(.invalidArgument,
                                      "s3://\(config.bucket): cannot create the bucket: 409 \(code); choose another bucket name")
            }
        }
    }

    /// Checks that the service honours `If-None-Match: *` (Woodpecker's fencing depends on it): a put-if-absent on a
    /// fresh key must succeed, a second one must fail with `.objectAlreadyExists`. The probe object is deleted.
    /// Throws `.storageNotWritable` (not retryable) when the service ignores the condition.
    public func verifyConditionalWrites() async throws {
        let key = "conditional_write_probe_\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
        try await putIfAbsent(key, ByteBuffer(string: "probe-1"))
        var honoured = false
        do {
            try await putIfAbsent(key, ByteBuffer(string: "probe-2"))
        } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
            honoured = true
        } catch {
            try? await delete(key)  // best effort: the original error matters more than the leftover probe
            throw error
        }
        try await delete(key)
        guard honoured else {
            throw WoodpeckerError(.storageNotWritable,
                                  "\(description) (endpoint \(config.endpoint)) ignores conditional writes: a second PUT with "
                                      + "If-None-Match: * succeeded. Woodpecker needs put-if-absent for fencing; use a "
                                      + "service that supports it (AWS S3, MinIO, SeaweedFS >= 3.8)", retryable: false)
        }
    }

    // MARK: multipart

    private func multipartPut(_ full: String, _ data: ByteBuffer) async throws {
        let initiated = try await send(S3Request(method: "POST", key: full, query: [("uploads", "")]))
        guard let uploadId = S3XML(initiated.response.body.readableBytesArray).text("UploadId"), !uploadId.isEmpty else {
            throw WoodpeckerError(.ioFailure, "\(uri(full)): InitiateMultipartUpload returned no UploadId")
        }
        do {
            let etags = try await uploadParts(full, uploadId: uploadId, data)
            var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            for (i, etag) in etags.enumerated() {
                xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(S3XML.escape(etag))</ETag></Part>"
            }
            xml += "</CompleteMultipartUpload>"
            var headers = HTTPHeaders()
            headers.add("Content-Type", "application/xml")
            let done = try await send(S3Request(method: "POST", key: full, query: [("uploadId", uploadId)], headers: headers,
                                                body: ByteBuffer(string: xml)))
            // CompleteMultipartUpload can fail after "200 OK" with an <Error> body.
            let reply = S3XML(done.response.body.readableBytesArray)
            if reply.elements("Error").first != nil || reply.elements("CompleteMultipartUploadResult").isEmpty {
                let code = reply.text("Code") ?? "no CompleteMultipartUploadResult"
                throw WoodpeckerError(.ioFailure, "\(uri(full)): CompleteMultipartUpload 200 \(code): \(reply.text("Message") ?? "")",
                                      retryable: code == "InternalError" || code == "SlowDown")
            }
        } catch {
            // Best effort: an upload left behind costs storage until the bucket's lifecycle rule removes it, and
            // the upload error is what the caller needs to see.
            _ = try? await send(S3Request(method: "DELETE", key: full, query: [("uploadId", uploadId)]), accept: [404])
            throw error
        }
    }

    /// Uploads the parts with at most `multipartConcurrency` in flight; returns their ETags in part order.
    private func uploadParts(_ full: String, uploadId: String, _ data: ByteBuffer) async throws -> [String] {
        let partSize = config.multipartPartSizeBytes
        let count = (data.readableBytes + partSize - 1) / partSize
        return try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var etags = [String](repeating: "", count: count)
            var next = 0
            func startPart(_ i: Int) throws {
                let offset = i * partSize
                let slice = try data.getSlice(at: data.readerIndex + offset, length: min(partSize, data.readableBytes - offset))
                group.addTask {
                    let outcome = try await self.send(S3Request(method: "PUT", key: full,
                                                                query: [("partNumber", String(i + 1)), ("uploadId", uploadId)],
                                                                body: slice))
                    guard let etag = outcome.response.headers["ETag"], !etag.isEmpty else {
                        throw WoodpeckerError(.ioFailure, "\(self.uri(full)): UploadPart \(i + 1) returned no ETag")
                    }
                    return (i, etag)
                }
            }
            while next < min(count, config.multipartConcurrency) {
                try startPart(next)
                next += 1
            }
            while let (i, etag) = try await group.next() {
                etags[i] = etag
                if next < count {
                    try startPart(next)
                    next += 1
                }
            }
            return etags
        }
    }

    // MARK: deletes

    private func deleteOneByOne(_ fullKeys: [String]) async throws {
        for k in fullKeys {
            _ = try await send(S3Request(method: "DELETE", key: k), accept: [404])
        }
    }

    private func deleteBatch(_ fullKeys: [String]) async throws {
        var xml = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
        for k in fullKeys { xml += "<Object><Key>\(S3XML.escape(k))</Key></Object>" }
        xml += "</Delete>"
        let body = Array(xml.utf8)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/xml")
        headers.add("Content-MD5", S3Crypto.base64(S3Crypto.md5(body)))
        let outcome = try await send(S3Request(method: "POST", key: nil, query: [("delete", "")], headers: headers,
                                               body: ByteBuffer(bytes: body)), accept: [400, 405, 501])
        if outcome.response.status != 200 {
            let code = S3XML(outcome.response.body.readableBytesArray).text("Code") ?? ""
            guard code != "NoSuchBucket" else { throw statusError(S3Request(method: "POST", key: nil), outcome.response) }
            batchDeleteUnsupported.store(true, ordering: .relaxed)
            try await deleteOneByOne(fullKeys)
            return
        }
        let failures = S3XML(outcome.response.body.readableBytesArray).elements("Error")
            .filter { $0.text("Code") != "NoSuchKey" }
        if let first = failures.first {
            let code = first.text("Code") ?? "?"
            throw WoodpeckerError(.ioFailure,
                                  "\(uri(first.text("Key") ?? "")): DeleteObjects: \(code): \(first.text("Message") ?? "") "
                                      + "(\(failures.count) of \(fullKeys.count) keys failed)",
                                  retryable: code == "InternalError" || code == "SlowDown")
        }
    }

    // MARK: requests

    struct S3Request: Sendable {
        var method: String
        /// Full object key (prefix included); nil for bucket-level requests.
        var key: String?
        var query: [(String, String)] = []
        var headers = HTTPHeaders()
        var body: ByteBuffer? = nil
    }

    struct Outcome: Sendable {
        var response: HTTPResponse
        /// An earlier attempt failed in a way that does not rule out that the server applied it.
        var earlierAttemptMayHaveApplied: Bool
    }

    /// Signs and sends `request`, retrying per the policy. Returns 2xx responses and those with a status in
    /// `accept`; throws for every other status and for transport failures once retries are used up.
    func send(_ request: S3Request, accept: Set<Int> = []) async throws -> Outcome {
        let payloadHash = try await payloadHash(request.body)
        let (host, path) = hostAndPath(request.key)
        let canonicalQuery = S3Signer.canonicalQuery(request.query)
        let url = "\(scheme)://\(host)\(path)\(canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)"
        var mayHaveApplied = false
        var rng = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            var headers = request.headers
            headers.replace("Host", host)
            signer.sign(method: request.method, path: path, query: request.query, headers: &headers,
                        payloadHash: payloadHash, amzDate: S3Signer.amzDate(epochSeconds: Int(Clock.wallMillis() / 1000)))
            let httpRequest = HTTPRequest(method: request.method, url: url, headers: headers, body: request.body,
                                          timeoutMs: config.requestTimeoutMs)
            var failure: WoodpeckerError
            do {
                let response = try await http.execute(httpRequest)
                if (200..<300).contains(response.status) || accept.contains(response.status) {
                    return Outcome(response: response, earlierAttemptMayHaveApplied: mayHaveApplied)
                }
                failure = statusError(request, response)
                if response.status >= 500 { mayHaveApplied = true }
            } catch let e as WoodpeckerError {
                if e.code == .clientClosed { throw e }
                failure = WoodpeckerError(e.code, "\(uri(request.key)): \(e.message) (endpoint \(config.endpoint))",
                                          retryable: e.isRetryable)
                mayHaveApplied = true
            }
            guard failure.isRetryable, attempt < config.retry.maxAttempts, !Task.isCancelled else {
                if attempt > 1 { failure.message += " (after \(attempt) attempts)" }
                throw failure
            }
            await loop.sleep(ms: config.retry.backoffMs(retry: attempt, using: &rng))
            attempt += 1
        }
    }

    /// The error for an unexpected status, with the S3 error code from the XML body.
    func statusError(_ request: S3Request, _ response: HTTPResponse) -> WoodpeckerError {
        let xml = S3XML(response.body.readableBytesArray)
        let code = xml.text("Code") ?? (request.method == "HEAD" ? "(no body for HEAD)" : "(no S3 error code)")
        let message = xml.text("Message").map { ": \($0)" } ?? ""
        let status = response.status
        let retryable = status >= 500 || status == 429
            || ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ConditionalRequestConflict"].contains(code)
        var text = "\(uri(request.key)): \(status) \(code)\(message) (\(request.method)"
        if !request.query.isEmpty { text += " ?\(request.query.map { $0.0 }.joined(separator: "&"))" }
        text += ", endpoint \(config.endpoint))"
        switch (status, code) {
        case (404, "NoSuchBucket"):
            return WoodpeckerError(.ioFailure, text + "; bucket \"\(config.bucket)\" does not exist: create it first",
                                   retryable: false)
        case (404, _) where request.key != nil:
            return notFound(request.key!, detail: "\(status) \(code)")
        case (403, _):
            return WoodpeckerError(.ioFailure, text + "; check the credentials, the region and the clock", retryable: false)
        default:
            return WoodpeckerError(.ioFailure, text, retryable: retryable)
        }
    }

    private func notFound(_ full: String, detail: String) -> WoodpeckerError {
        WoodpeckerError(.objectNotFound, "\(uri(full)): object not found (\(detail))", retryable: false)
    }

    private func payloadHash(_ body: ByteBuffer?) async throws -> String {
        guard config.payloadSigning == .signed else { return S3Signer.unsignedPayload }
        guard let body, body.readableBytes > 0 else { return S3Signer.emptyPayloadHash }
        if body.readableBytes <= 64 * 1024 { return S3Crypto.hex(S3Crypto.sha256(body)) }
        // Hashing megabytes takes milliseconds: keep it off the caller's executor (often the loop thread).
        return try await loop.runBlocking { S3Crypto.hex(S3Crypto.sha256(body)) }
    }

    private func hostAndPath(_ fullKey: String?) -> (String, String) {
        switch config.addressing {
        case .pathStyle:
            return (authority, S3Signer.encodePath("/\(config.bucket)" + (fullKey.map { "/" + $0 } ?? "")))
        case .virtualHosted:
            return ("\(config.bucket).\(authority)", S3Signer.encodePath("/" + (fullKey ?? "")))
        }
    }

    private func objectKey(_ key: String) throws -> String {
        try ObjectKey.validate(key, store: description)
        return config.keyPrefix.isEmpty ? key : config.keyPrefix + "/" + key
    }

    private func uri(_ fullKey: String?) -> String {
        "s3://\(config.bucket)" + (fullKey.map { "/" + $0 } ?? "")
    }

    static func unquote(_ etag: String) -> String {
        var s = Substring(etag)
        if s.hasPrefix("W/") { s = s.dropFirst(2) }
        if s.count >= 2 && s.first == "\"" && s.last == "\"" { s = s.dropFirst().dropLast() }
        return String(s)
    }
}
