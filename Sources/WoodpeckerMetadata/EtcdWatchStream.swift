import WoodpeckerCore
import WoodpeckerIO

/// One open `POST /v3/watch` stream: newline-delimited JSON messages, the first of which said "created".
/// Read by one task at a time (the watch's pump); `cancel()` may be called from anywhere.
final class EtcdWatchStream: @unchecked Sendable {
    let endpoint: String
    let prefix: String
    /// `header.revision` of the "created" message: every later change has a higher revision.
    private(set) var createdRevision: Int64 = 0
    private let body: HTTPBodyStream
    private var iterator: HTTPBodyStream.AsyncIterator
    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already searched for a newline.
    private var scanned = 0
    private var ended = false
    private let maxMessageBytes: Int

    private init(endpoint: String, prefix: String, body: HTTPBodyStream, maxMessageBytes: Int) {
        self.endpoint = endpoint
        self.prefix = prefix
        self.body = body
        iterator = body.makeAsyncIterator()
        self.maxMessageBytes = maxMessageBytes
    }

    func cancel() async { await body.cancel() }

    /// The next message, or nil when the stream ended. A dropped connection throws `EtcdEndpointFailure.transport`.
    func nextMessage() async throws -> EtcdObject? {
        while true {
            if let nl = buffer[scanned...].firstIndex(of: 0x0A) {
                let line = buffer[..<nl]
                defer {
                    buffer.removeSubrange(...nl)
                    scanned = 0
                }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) { continue }
                return try decode(line)
            }
            scanned = buffer.count
            if ended {
                guard !buffer.isEmpty else { return nil }
                defer { buffer.removeAll() }
                return try decode(buffer[...])
            }
            let chunk: ByteBuffer?
            do {
                chunk = try await iterator.next()
            } catch let e as WoodpeckerError {
                if e.code == .clientClosed { throw e }
                throw EtcdEndpointFailure.transport("\(endpoint): watch stream on prefix '\(prefix)' dropped: \(e.message)")
            }
            guard let chunk else {
                ended = true
                continue
            }
            buffer.append(contentsOf: chunk.readableBytesArray)
            if buffer.count > maxMessageBytes {
                throw WoodpeckerError(.bufferFull,
                                      "\(endpoint): watch message on prefix '\(prefix)' exceeds \(maxMessageBytes) bytes; raise maxWatchMessageBytes")
            }
        }
    }

    private func decode(_ line: ArraySlice<UInt8>) throws -> EtcdObject {
        guard let o = EtcdJSON.decode(line) else {
            throw WoodpeckerError(.metadataCorrupted,
                                  "\(endpoint)/v3/watch for prefix '\(prefix)': undecodable message: \(EtcdJSON.snippet(Array(line)))")
        }
        return o
    }

    // MARK: opening

    /// Opens a watch on `prefix` from `startRevision` (inclusive; 0 = from now) on the first endpoint that answers
    /// and waits until etcd confirms it. Throws `.revisionConflict` ("compacted") when `startRevision` is gone,
    /// retryable `.metadataUnavailable` when no endpoint answers.
    static func open(connection: EtcdConnection, prefix: String, startRevision: Int64,
                     maxMessageBytes: Int) async throws -> EtcdWatchStream
    {
        let p = Array(prefix.utf8)
        var create: [String: Any] = ["key": EtcdJSON.base64(p.isEmpty ? [0] : p),
                                     "range_end": EtcdJSON.base64(EtcdJSON.prefixEnd(p))]
        if startRevision > 0 { create["start_revision"] = String(startRevision) }
        let payload = EtcdJSON.encode(["create_request": create])
        let subject = "watch on prefix '\(prefix)' from revision \(startRevision)"
        var failures: [String] = []
        for index in connection.endpointOrder() {
            let endpoint = connection.endpoints[index]
            do {
                let s = try await openOn(connection, endpoint, payload, prefix: prefix, subject: subject,
                                         maxMessageBytes: maxMessageBytes)
                connection.markPreferred(index)
                return s
            } catch let f as EtcdEndpointFailure {
                switch f {
                case let .connect(m), let .transport(m): failures.append(m)
                }
            }
        }
        throw WoodpeckerError(.metadataUnavailable,
                              "\(connection.storeName): \(subject): no etcd endpoint answered (\(failures.joined(separator: "; "))); check that etcd is running and retry")
    }

    private static func openOn(_ connection: EtcdConnection, _ endpoint: String, _ payload: ByteBuffer,
                               prefix: String, subject: String, maxMessageBytes: Int) async throws -> EtcdWatchStream
    {
        var renewed = false
        while true {
            let deadline = Clock.monotonicMillis() + connection.requestTimeoutMs
            let token = try await connection.authToken(endpoint, deadline: deadline, subject: subject)
            var headers = HTTPHeaders()
            headers.add("Content-Type", "application/json")
            if let token { headers.add("Authorization", token) }
            let response: HTTPStreamingResponse
            do {
                response = try await connection.http.stream(HTTPRequest(method: "POST", url: endpoint + "/v3/watch",
                                                                        headers: headers, body: payload, timeoutMs: 0))
            } catch let e as WoodpeckerError {
                throw connection.classify(e, endpoint: endpoint)
            }
            let s = EtcdWatchStream(endpoint: endpoint, prefix: prefix, body: response.body,
                                    maxMessageBytes: maxMessageBytes)
            // The stream itself has no deadline; bound the wait for etcd's confirmation.
            let waitMs = connection.requestTimeoutMs
            let timer = Task {
                do { try await Task.sleep(nanoseconds: waitMs * 1_000_000) } catch { return }
                await s.cancel()
            }
            let first: EtcdObject?
            do {
                first = try await s.nextMessage()
                timer.cancel()
            } catch {
                timer.cancel()
                await s.cancel()
                throw error
            }
            guard let first else {
                throw EtcdEndpointFailure.transport("\(endpoint): \(subject): no confirmation within \(waitMs) ms (HTTP \(response.status))")
            }
            if let e = first.object("error") ?? (first["result"] == nil ? first : nil) {
                await s.cancel()
                let code = e.int64("code") ?? 0
                if code == 16, connection.credentials != nil, !renewed {
                    connection.invalidateToken(token)
                    renewed = true
                    continue
                }
                throw connection.mapError(code: code, message: e.string("message") ?? e.string("error") ?? "HTTP \(response.status)",
                                          endpoint: endpoint, path: "/v3/watch", subject: subject)
            }
            guard let result = first.object("result") else {
                await s.cancel()
                throw WoodpeckerError(.metadataCorrupted, "\(endpoint)/v3/watch for prefix '\(prefix)': first message has no result")
            }
            if result.bool("canceled") {
                await s.cancel()
                let reason = result.string("cancel_reason") ?? ""
                if reason.contains("invalid auth token"), connection.credentials != nil, !renewed {
                    connection.invalidateToken(token)
                    renewed = true
                    continue
                }
                throw canceledError(result, endpoint: endpoint, subject: subject, storeName: connection.storeName)
            }
            s.createdRevision = result.headerRevision ?? 0
            if !result.objects("events").isEmpty {
                // etcd sends "created" on its own; events here would be lost by the caller.
                await s.cancel()
                throw WoodpeckerError(.metadataCorrupted, "\(endpoint)/v3/watch for prefix '\(prefix)': events in the created message")
            }
            return s
        }
    }

    /// The error for a watch etcd canceled: compaction, authentication or another reason.
    static func canceledError(_ result: EtcdObject, endpoint: String, subject: String, storeName: String) -> any Error {
        let compact = result.int64("compact_revision") ?? 0
        if compact > 0 {
            return WoodpeckerError(.revisionConflict,
                                   "\(storeName): \(subject) on \(endpoint): compacted (oldest revision kept is \(compact)); read the current state with range and watch from its revision")
        }
        let reason = result.string("cancel_reason") ?? "no reason given"
        if reason.contains("Unavailable") || reason.contains("no leader") {
            return EtcdEndpointFailure.transport("\(endpoint): \(subject) canceled: \(reason)")
        }
        return WoodpeckerError(.invalidArgument, "\(storeName): \(subject) on \(endpoint) canceled by etcd: \(reason)")
    }
}
