import WoodpeckerCore
import WoodpeckerIO
import Synchronization

/// `LogStoreNodeClient` over the binary LogStore protocol: one TCP connection to one node, connected lazily,
/// requests pipelined and matched by request id.
///
/// Guarantees:
/// - every call ends within `requestTimeoutMs` (`.timeout`, retryable), waiting for a connection and for room
///   included;
/// - when the connection fails or closes, every outstanding call fails with `.nodeUnavailable` (retryable) and the
///   next call connects again;
/// - request bytes outstanding are bounded by `maxOutstandingBytes` (a call beyond it waits, within its deadline;
///   a single larger request is sent alone);
/// - runs on `loop` (the actor's executor): calls made on the loop do not change threads.
public actor LogStoreClient: LogStoreNodeClient {
    public nonisolated let loop: EventLoop
    public nonisolated let address: String
    public nonisolated let requestTimeoutMs: UInt64
    public nonisolated let maxOutstandingBytes: Int
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    private let host: String
    private let port: Int
    private let generation = Atomic<UInt64>(0)
    /// See `LogStoreNodeClient.connectionGeneration`.
    public nonisolated var connectionGeneration: UInt64 { generation.load(ordering: .acquiring) }
    private var connection: TCPConnection?
    private var connecting: Task<TCPConnection, any Error>?
    private var pending: [UInt64: Pending] = [:]
    /// Request ids in send order with their deadlines (equal timeouts keep deadlines in order).
    private var deadlines: [(id: UInt64, deadlineMs: UInt64)] = []
    private var deadlineHead = 0
    private var timer: LoopTimer?
    private var nextRequestId: UInt64 = 1
    private var outstandingBytes = 0
    private var roomWaiters: [RoomWaiter] = []
    private var closed = false

    private struct Pending {
        var opcode: LogStoreOpcode
        var bytes: Int
        var continuation: CheckedContinuation<LogStoreResult, any Error>
    }

    private struct RoomWaiter {
        var id: UInt64
        var bytes: Int
        var continuation: CheckedContinuation<Void, any Error>
    }

    /// `address` is `HOST:PORT`. Nothing is connected until the first call.
    public init(loop: EventLoop, address: String, requestTimeoutMs: UInt64 = 10_000,
                maxOutstandingBytes: Int = 64 * 1024 * 1024) {
        self.loop = loop
        self.address = address
        self.requestTimeoutMs = requestTimeoutMs
        self.maxOutstandingBytes = maxOutstandingBytes
        if let colon = address.lastIndex(of: ":"), let p = Int(address[address.index(after: colon)...]) {
            host = String(address[..<colon])
            port = p
        } else {
            host = address
            port = -1
        }
    }

    // MARK: LogStoreNodeClient

    public func append(_ segment: SegmentRef, block n: Int32, bytes: ByteBuffer, confirmedThrough: Int32,
                       durableThrough: Int32, uploader: Bool) async throws -> Int32 {
        let r = try await call(.append(segment, block: n, bytes: bytes, confirmedThrough: confirmedThrough,
                                       durableThrough: durableThrough, uploader: uploader))
        guard case let .uploaded(through) = r else { throw unexpected("append") }
        return through
    }

    public func updateConfirmed(_ segment: SegmentRef, through: Int32, durableThrough: Int32, uploader: Bool) async throws -> Int32 {
        guard case let .uploaded(n) = try await call(.updateConfirmed(segment, through: through, durableThrough: durableThrough,
                                                                      uploader: uploader))
        else { throw unexpected("updateConfirmed") }
        return n
    }

    public func fence(_ segment: SegmentRef) async throws -> SegmentStatus {
        guard case let .status(s) = try await call(.fence(segment)) else { throw unexpected("fence") }
        return s
    }

    public func status(_ segment: SegmentRef) async throws -> SegmentStatus {
        guard case let .status(s) = try await call(.status(segment)) else { throw unexpected("status") }
        return s
    }

    public func readBlock(_ segment: SegmentRef, number n: Int32) async throws -> ByteBuffer? {
        guard case let .block(b) = try await call(.readBlock(segment, number: n)) else { throw unexpected("readBlock") }
        return b
    }

    public func complete(_ segment: SegmentRef, lastBlock: Int32) async throws {
        _ = try await call(.complete(segment, lastBlock: lastBlock))
    }

    public func health() async throws -> NodeHealth {
        guard case let .health(h) = try await call(.health) else { throw unexpected("health") }
        return h
    }

    public func close() async {
        guard !closed else { return }
        closed = true
        failAll(WoodpeckerError(.clientClosed, "LogStore client for \(address) was closed"))
        timer?.close()
        timer = nil
        connecting?.cancel()
        if let c = connection {
            connection = nil
            await c.closeAndWait()
        }
    }

    /// Sends one raw frame and waits for the response to its request id (tests: other protocol versions).
    public func callRaw(_ frame: ByteBuffer, requestId: UInt64, opcode: LogStoreOpcode) async throws -> LogStoreResult {
        try await send([frame], requestId: requestId, opcode: opcode)
    }

    /// A request id not used by this client's own calls.
    public func reserveRequestId() -> UInt64 {
        defer { nextRequestId += 1 }
        return nextRequestId
    }

    // MARK: requests

    private func unexpected(_ op: String) -> WoodpeckerError {
        WoodpeckerError(.corrupted, "LogStore node \(address) answered \(op) with another op's result")
    }

    private func call(_ request: LogStoreRequest) async throws -> LogStoreResult {
        let id = reserveRequestId()
        return try await send(LogStoreWire.encodeRequestParts(request, requestId: id), requestId: id, opcode: request.opcode)
    }

    /// Sends one request frame, given as parts written back to back (an append's block is not copied into it).
    private func send(_ frame: [ByteBuffer], requestId id: UInt64, opcode: LogStoreOpcode) async throws -> LogStoreResult {
        guard !closed else { throw WoodpeckerError(.clientClosed, "LogStore client for \(address) is closed") }
        let deadline = Clock.monotonicMillis() + requestTimeoutMs
        let size = frame.reduce(0) { $0 + $1.readableBytes }
        if outstandingBytes > 0 && outstandingBytes + size > maxOutstandingBytes {
            try await waitForRoom(id: id, bytes: size, deadline: deadline)  // returns with the bytes reserved
        } else {
            outstandingBytes += size
        }
        var handedOver = false
        do {
            let conn = try await connected(deadline: deadline)
            guard !closed else { throw WoodpeckerError(.clientClosed, "LogStore client for \(address) is closed") }
            handedOver = true
            return try await withCheckedThrowingContinuation { (c: CheckedContinuation<LogStoreResult, any Error>) in
                pending[id] = Pending(opcode: opcode, bytes: size, continuation: c)
                track(id, deadline)
                for part in frame { conn.write(part) }
            }
        } catch {
            // Bytes of a request that never became pending are released here; a pending one released them when
            // it finished.
            if !handedOver { release(size) }
            throw (error as? PendingFailure)?.error ?? error
        }
    }

    /// Wraps errors delivered through a pending continuation (whose bytes were released already).
    private struct PendingFailure: Error { var error: WoodpeckerError }

    private func connected(deadline: UInt64) async throws -> TCPConnection {
        if let c = connection, !c.isClosing { return c }
        // A connection that is closing has lost its requests: fail them now rather than at their deadlines (its
        // close callback, arriving after a new connection replaced it, would no longer find them).
        if let c = connection { connectionLost(c, WoodpeckerError(.nodeUnavailable, "connection is closing")) }
        if let t = connecting { return try await t.value }
        guard port > 0 else {
            throw WoodpeckerError(.invalidArgument, "LogStore node address \(address): expected HOST:PORT")
        }
        let remaining = deadline > Clock.monotonicMillis() ? deadline - Clock.monotonicMillis() : 1
        let (loop, host, port, address) = (loop, host, port, address)
        let task = Task(executorPreference: loop) { () async throws -> TCPConnection in
            do {
                var options = TCPConnectionOptions()
                options.lengthPrefixedFrames = true
                return try await TCPClient.connect(loop: loop, host: host, port: port, options: options,
                                                   connectTimeoutMs: max(remaining, 1)) {
                    [weak self] _ in ClientConnectionHandler(client: self)
                }
            } catch let e as WoodpeckerError {
                throw WoodpeckerError(e.code == .timeout ? .timeout : .nodeUnavailable,
                                      "LogStore node \(address): \(e.message)", retryable: true)
            }
        }
        connecting = task
        defer { connecting = nil }
        let c = try await task.value
        if closed {
            c.close()
            throw WoodpeckerError(.clientClosed, "LogStore client for \(address) is closed")
        }
        connection = c
        generation.add(1, ordering: .releasing)
        return c
    }

    private func waitForRoom(id: UInt64, bytes: Int, deadline: UInt64) async throws {
        let ms = deadline > Clock.monotonicMillis() ? deadline - Clock.monotonicMillis() : 0
        let address = address
        loop.schedule(afterMs: ms) { [weak self] in
            self?.assumeIsolated { client in
                guard let i = client.roomWaiters.firstIndex(where: { $0.id == id }) else { return }
                client.roomWaiters.remove(at: i).continuation.resume(throwing: WoodpeckerError(
                    .timeout, "LogStore node \(address): no room to send \(bytes) bytes within the request timeout (\(client.outstandingBytes) bytes outstanding)"))
            }
        }
        try await withCheckedThrowingContinuation { roomWaiters.append(RoomWaiter(id: id, bytes: bytes, continuation: $0)) }
    }

    /// Gives `bytes` back and lets waiting requests in, in order, reserving their bytes for them.
    private func release(_ bytes: Int) {
        outstandingBytes -= bytes
        while let w = roomWaiters.first, outstandingBytes == 0 || outstandingBytes + w.bytes <= maxOutstandingBytes {
            roomWaiters.removeFirst()
            outstandingBytes += w.bytes
            w.continuation.resume()
        }
    }

    // MARK: deadlines

    private func track(_ id: UInt64, _ deadline: UInt64) {
        deadlines.append((id, deadline))
        armTimer()
    }

    private func armTimer() {
        while deadlineHead < deadlines.count && pending[deadlines[deadlineHead].id] == nil { deadlineHead += 1 }
        if deadlineHead > 1024 && deadlineHead * 2 > deadlines.count {
            deadlines.removeFirst(deadlineHead)
            deadlineHead = 0
        }
        guard deadlineHead < deadlines.count else {
            timer?.stop()
            return
        }
        if timer == nil {
            timer = LoopTimer(loop: loop) { [weak self] in self?.assumeIsolated { $0.expire() } }
        }
        if timer!.isActive { return }
        let now = Clock.monotonicMillis()
        let due = deadlines[deadlineHead].deadlineMs
        timer!.start(afterMs: due > now ? due - now : 0)
    }

    private func expire() {
        let now = Clock.monotonicMillis()
        while deadlineHead < deadlines.count && deadlines[deadlineHead].deadlineMs <= now {
            let id = deadlines[deadlineHead].id
            deadlineHead += 1
            finish(id, .failure(WoodpeckerError(.timeout, "LogStore node \(address): no answer to request \(id) within \(requestTimeoutMs) ms")))
        }
        armTimer()
    }

    // MARK: responses

    private func finish(_ id: UInt64, _ result: Result<LogStoreResult, WoodpeckerError>) {
        guard let p = pending.removeValue(forKey: id) else { return }
        release(p.bytes)
        switch result {
        case let .success(r): p.continuation.resume(returning: r)
        case let .failure(e): p.continuation.resume(throwing: PendingFailure(error: e))
        }
    }

    fileprivate func received(_ frame: LogStoreFrame, on conn: TCPConnection) {
        guard let p = pending[frame.requestId] else { return }  // timed out already
        guard frame.opcode == p.opcode.rawValue else {
            finish(frame.requestId, .failure(WoodpeckerError(.corrupted, "LogStore node \(address): response to request \(frame.requestId) carries opcode \(frame.opcode), expected \(p.opcode.rawValue)")))
            return
        }
        do {
            finish(frame.requestId, try LogStoreWire.decodeResponse(frame))
        } catch {
            finish(frame.requestId, .failure(error))
        }
    }

    fileprivate func connectionLost(_ conn: TCPConnection, _ error: WoodpeckerError?) {
        guard connection === conn || connection == nil else { return }
        connection = nil
        let why = error.map { $0.message } ?? "closed by the node"
        failAll(WoodpeckerError(.nodeUnavailable, "LogStore node \(address): connection lost (\(why))", retryable: true))
    }

    private func failAll(_ e: WoodpeckerError) {
        for id in Array(pending.keys) { finish(id, .failure(e)) }
        for w in roomWaiters { w.continuation.resume(throwing: e) }
        roomWaiters.removeAll()
        armTimer()
    }
}

/// Reads response frames for a `LogStoreClient`. Loop thread only.
private final class ClientConnectionHandler: TCPConnectionHandler {
    weak var client: LogStoreClient?

    init(client: LogStoreClient?) { self.client = client }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        while true {
            do {
                guard let frame = try LogStoreWire.nextFrame(&data) else { return }
                client?.assumeIsolated { $0.received(frame, on: connection) }
            } catch {
                data.readerIndex = data.writerIndex
                connection.abort(error: WoodpeckerError(.nodeUnavailable, "bad response frame: \(error.message)", retryable: true))
                return
            }
        }
    }

    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        client?.assumeIsolated { $0.connectionLost(connection, error) }
    }
}
