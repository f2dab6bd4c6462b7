import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO

/// Pipelined Kafka requests over one TCP connection, callback-driven (no task per request).
///
/// Loop-thread object: `send` and every completion run on the connection's loop thread. Guarantees:
/// - responses are framed by their 4-byte size and matched to requests in order; a response whose correlation id
///   differs from the oldest outstanding request closes the connection (Kafka answers in request order);
/// - every completion runs exactly once: with the response body (after the response header) or with the error
///   that closed the connection;
/// - at most `maxOutstanding` requests are outstanding; `send` beyond that fails at once with `.bufferFull`.
final class KafkaPipeline: TCPConnectionHandler, @unchecked Sendable {
    typealias Completion = (Result<ByteBuffer, WoodpeckerError>) -> Void

    private struct Pending {
        let correlationId: Int32
        let responseHeaderVersion: Int16
        let done: Completion
    }

    let clientId: String
    let maxOutstanding: Int
    /// Largest response accepted; a larger size prefix closes the connection.
    let maxResponseBytes: Int
    private(set) var connection: TCPConnection?
    private var pending: [Pending] = []
    private var head = 0
    private var nextCorrelationId: Int32 = 1
    private(set) var closeError: WoodpeckerError?
    private(set) var isClosed = false

    init(clientId: String = "woodpecker-bench", maxOutstanding: Int = 4096, maxResponseBytes: Int = 64 * 1024 * 1024) {
        self.clientId = clientId
        self.maxOutstanding = maxOutstanding
        self.maxResponseBytes = maxResponseBytes
    }

    /// Requests sent and not yet answered.
    var outstanding: Int { pending.count - head }

    func connectionActive(_ connection: TCPConnection) {
        self.connection = connection
    }

    /// Sends `body` (an encoded request body of `apiKey` at `version`, shared and not copied) behind a fresh
    /// request header. `done` receives the response body.
    func send(apiKey: Int16, version: Int16, body: ByteBuffer, done: @escaping Completion) {
        guard let connection, !isClosed, !connection.isClosing else {
            done(.failure(closeError ?? WoodpeckerError(.clientClosed, "kafka request: connection is closed")))
            return
        }
        guard outstanding < maxOutstanding else {
            done(.failure(WoodpeckerError(.bufferFull,
                                          "kafka request to \(connection.peerAddress): \(outstanding) requests outstanding (bound \(maxOutstanding)); wait for responses")))
            return
        }
        let id = nextCorrelationId
        nextCorrelationId = nextCorrelationId == Int32.max ? 1 : nextCorrelationId + 1
        var head = ByteBuffer(capacity: 64)
        let sizeAt = head.reserveBytes(4)
        RequestHeader(requestApiKey: apiKey, requestApiVersion: version, correlationId: id, clientId: clientId)
            .encode(to: &head, version: KafkaHeaders.requestHeaderVersion(apiKey: apiKey, version: version))
        head.setInteger(Int32(head.writerIndex - sizeAt - 4 + body.readableBytes), at: sizeAt)
        pending.append(Pending(correlationId: id,
                               responseHeaderVersion: KafkaHeaders.responseHeaderVersion(apiKey: apiKey, version: version),
                               done: done))
        // Two writes, one system call: the connection coalesces buffers queued in the same loop turn.
        connection.write(head)
        connection.write(body)
    }

    /// Encodes and sends `message`; `done` receives the response body.
    func send<M: KafkaMessage>(_ message: M, version: Int16, done: @escaping Completion) {
        var body = ByteBuffer()
        message.encode(to: &body, version: version)
        send(apiKey: M.apiKey, version: version, body: body, done: done)
    }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        while data.readableBytes >= 4 {
            guard let size = try? data.getInteger(at: data.readerIndex, as: Int32.self),
                  size >= 4, Int(size) <= maxResponseBytes
            else {
                let s = (try? data.getInteger(at: data.readerIndex, as: Int32.self)) ?? -1
                connection.abort(error: WoodpeckerError(.corrupted,
                                                        "kafka response from \(connection.peerAddress): size \(s) outside 4...\(maxResponseBytes); is this a Kafka broker?"))
                return
            }
            guard data.readableBytes >= 4 + Int(size) else { return }
            // Lengths were checked above, so neither call can fail.
            try? data.skip(4)
            guard var frame = try? data.readSlice(length: Int(size)) else { return }
            guard head < pending.count else {
                connection.abort(error: WoodpeckerError(.corrupted,
                                                        "kafka response from \(connection.peerAddress) with no request outstanding"))
                return
            }
            let p = pending[head]
            head += 1
            if head == pending.count {
                pending.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024 {
                pending.removeFirst(head)
                head = 0
            }
            guard let header = try? ResponseHeader(from: &frame, version: p.responseHeaderVersion),
                  header.correlationId == p.correlationId
            else {
                let e = WoodpeckerError(.corrupted,
                                        "kafka response from \(connection.peerAddress): expected correlation id \(p.correlationId), got a different or undecodable header")
                p.done(.failure(e))
                connection.abort(error: e)
                return
            }
            p.done(.success(frame))
            if isClosed { return }
        }
    }

    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        isClosed = true
        let e = error ?? WoodpeckerError(.clientClosed, "kafka connection to \(connection.peerAddress) closed by the broker")
        closeError = e
        let left = pending[head...]
        pending.removeAll()
        head = 0
        for p in left {
            p.done(.failure(WoodpeckerError(e.code, "request \(p.correlationId) unanswered: \(e.message)", retryable: e.isRetryable)))
        }
    }
}

/// One bench connection: the TCP connection and its pipeline handler.
struct BenchConnection: @unchecked Sendable {
    let tcp: TCPConnection
    let pipeline: KafkaPipeline

    static func open(loop: EventLoop, host: String, port: Int) async throws -> BenchConnection {
        var options = TCPConnectionOptions()
        options.writeHighWatermarkBytes = 8 * 1024 * 1024
        options.writeLowWatermarkBytes = 2 * 1024 * 1024
        options.maxUnreadBytes = 80 * 1024 * 1024
        options.lengthPrefixedFrames = true
        let tcp = try await TCPClient.connect(loop: loop, host: host, port: port, options: options) { _ in KafkaPipeline() }
        let pipeline = await tcp.onLoop { c in c.handler as! KafkaPipeline }
        return BenchConnection(tcp: tcp, pipeline: pipeline)
    }

    /// Sends one request and decodes its response. Callable from anywhere.
    func request<Req: KafkaMessage, Resp: KafkaMessage>(_ message: Req, version: Int16, response: Resp.Type)
        async throws -> Resp
    {
        let pipeline = pipeline
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Resp, any Error>) in
            tcp.loop.executeOrRun {
                pipeline.send(message, version: version) { result in
                    switch result {
                    case var .success(body):
                        do {
                            c.resume(returning: try Resp(from: &body, version: version))
                        } catch {
                            c.resume(throwing: WoodpeckerError(.corrupted, "decode \(Resp.self) v\(version): \(error)"))
                        }
                    case let .failure(e):
                        c.resume(throwing: e)
                    }
                }
            }
        }
    }

    func close() async {
        await tcp.closeAndWait()
    }
}
