import CLibUV
import WoodpeckerCore

/// Outgoing TCP connections.
public enum TCPClient {
    /// Connects to `host:port` on `loop`. `handlerFactory` (called on the loop thread) supplies the connection's
    /// handler; without it the connection gets a `TCPInboxHandler`, which the async `receive` calls read from.
    /// Fails with `.ioFailure` naming the address (connection refused, unreachable, ...) or `.timeout` after
    /// `connectTimeoutMs`.
    public static func connect(loop: EventLoop, host: String, port: Int,
                               options: TCPConnectionOptions = TCPConnectionOptions(),
                               connectTimeoutMs: UInt64 = 10_000,
                               handlerFactory: (@Sendable (TCPConnection) -> any TCPConnectionHandler)? = nil)
        async throws -> TCPConnection
    {
        let address = try await SocketAddress.resolve(host, port: port, loop: loop)
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<TCPConnection, any Error>) in
            loop.executeOrRun {
                let attempt = ConnectAttempt(loop: loop, target: "\(host):\(port)", options: options,
                                             handlerFactory: handlerFactory) { c.resume(with: $0) }
                attempt.start(address: address, timeoutMs: connectTimeoutMs)
            }
        }
    }
}

/// The state of one pending `uv_tcp_connect`, kept alive by the request until its callback.
private final class ConnectAttempt {
    let loop: EventLoop
    let target: String
    let options: TCPConnectionOptions
    let handlerFactory: ((TCPConnection) -> any TCPConnectionHandler)?
    let done: (Result<TCPConnection, any Error>) -> Void
    let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
    var timer: LoopTimer?
    var timedOut = false
    var timeoutMs: UInt64 = 0

    init(loop: EventLoop, target: String, options: TCPConnectionOptions,
         handlerFactory: ((TCPConnection) -> any TCPConnectionHandler)?,
         done: @escaping (Result<TCPConnection, any Error>) -> Void)
    {
        self.loop = loop
        self.target = target
        self.options = options
        self.handlerFactory = handlerFactory
        self.done = done
    }

    func start(address: SocketAddress, timeoutMs: UInt64) {
        self.timeoutMs = timeoutMs
        uv_tcp_init(loop.uvLoop, tcp)
        let req = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let rc = address.withSockaddr { uv_tcp_connect(req, tcp, $0, tcpConnectCallback) }
        if rc != 0 {
            Unmanaged<ConnectAttempt>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            fail(rc)
            return
        }
        if timeoutMs > 0 {
            timer = LoopTimer(loop: loop) { [unowned self] in
                // Closing the handle cancels the request; its callback reports the timeout.
                self.timedOut = true
                self.timer?.close()
                self.timer = nil
                uvCloseIfOpen(self.tcp) { $0?.deallocate() }
            }
            timer!.start(afterMs: timeoutMs)
        }
    }

    func connected(status: Int32) {
        timer?.close()
        timer = nil
        guard status == 0 else {
            fail(status)
            return
        }
        let conn = TCPConnection(loop: loop, tcp: tcp, options: options)
        conn.handler = handlerFactory?(conn) ?? TCPInboxHandler()
        conn.start()
        done(.success(conn))
    }

    private func fail(_ rc: Int32) {
        if !timedOut {
            uvCloseIfOpen(tcp) { $0?.deallocate() }
            done(.failure(WoodpeckerError(.ioFailure, "connect to \(target): \(uvErrorText(rc)); is the server running and reachable?",
                                          retryable: true)))
        } else {
            done(.failure(WoodpeckerError(.timeout, "connect to \(target): no answer within \(timeoutMs) ms")))
        }
    }
}

private let tcpConnectCallback: uv_connect_cb = { req, status in
    let a = Unmanaged<ConnectAttempt>.fromOpaque(req!.pointee.data).takeRetainedValue()
    req!.deallocate()
    a.connected(status: status)
}

/// A handler that buffers received bytes for the async `receive` calls (tests, load generators, simple clients).
///
/// At most `maxBufferedBytes` are buffered: beyond that it pauses reading until `receive` takes bytes out, so a
/// slow consumer pushes back on the peer through TCP flow control.
public final class TCPInboxHandler: TCPConnectionHandler {
    public let maxBufferedBytes: Int
    private var buffer = ByteBuffer()
    private var waiter: (count: Int, resume: (Result<ByteBuffer, WoodpeckerError>) -> Void)?
    private var closed = false
    private var closeError: WoodpeckerError?

    public init(maxBufferedBytes: Int = 4 * 1024 * 1024) {
        self.maxBufferedBytes = maxBufferedBytes
    }

    /// Bytes buffered and not yet received.
    public var bufferedBytes: Int { buffer.readableBytes }

    public func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        buffer.writeBuffer(data)
        data.readerIndex = data.writerIndex
        if buffer.readableBytes >= maxBufferedBytes { connection.pauseReading() }
        satisfy(connection)
    }

    public func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        closed = true
        closeError = error
        satisfy(connection)
    }

    /// Delivers exactly `count` bytes once they are buffered. One receive at a time.
    func receive(_ connection: TCPConnection, exactly count: Int,
                 _ resume: @escaping (Result<ByteBuffer, WoodpeckerError>) -> Void)
    {
        precondition(waiter == nil, "TCPInboxHandler: only one receive at a time")
        precondition(count <= maxBufferedBytes, "receive of \(count) bytes exceeds the inbox bound \(maxBufferedBytes)")
        waiter = (count, resume)
        satisfy(connection)
    }

    private func satisfy(_ connection: TCPConnection) {
        guard let w = waiter else { return }
        if buffer.readableBytes >= w.count {
            waiter = nil
            // Cannot fail: the length was checked.
            let out = try! buffer.readSlice(length: w.count)
            if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 1 << 20 { buffer.discardReadBytes() }
            if connection.isReadingPaused && buffer.readableBytes < maxBufferedBytes { connection.resumeReading() }
            w.resume(.success(out))
        } else if closed {
            waiter = nil
            let reason = closeError.map { ": \($0.message)" } ?? " by the peer"
            w.resume(.failure(WoodpeckerError(.clientClosed,
                                              "receive \(w.count) bytes from \(connection.peerAddress): connection closed after \(buffer.readableBytes) bytes\(reason)")))
        }
    }
}

extension TCPConnection {
    /// Queues `data` and waits until it was handed to the kernel. Callable from anywhere.
    public func send(_ data: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            loop.executeOrRun {
                self.write(data) { e in
                    if let e { c.resume(throwing: e) } else { c.resume() }
                }
            }
        }
    }

    /// Waits for exactly `count` received bytes. Needs the default `TCPInboxHandler`. Callable from anywhere.
    public func receive(exactly count: Int) async throws -> ByteBuffer {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<ByteBuffer, any Error>) in
            loop.executeOrRun {
                guard let inbox = self.handler as? TCPInboxHandler else {
                    c.resume(throwing: WoodpeckerError(.invalidArgument,
                                                       "receive on \(self.peerAddress): the connection's handler is not a TCPInboxHandler"))
                    return
                }
                inbox.receive(self, exactly: count) { c.resume(with: $0.mapError { $0 as any Error }) }
            }
        }
    }

    /// Closes in order (see `close()`) and waits until the socket is closed; returns the close error, if any.
    @discardableResult
    public func closeAndWait() async -> WoodpeckerError? {
        await withCheckedContinuation { (c: CheckedContinuation<WoodpeckerError?, Never>) in
            loop.executeOrRun {
                self.whenClosed { c.resume(returning: $0) }
                self.close()
            }
        }
    }

    /// Waits until the connection is closed (by either side); returns the close error, if any.
    public func waitClosed() async -> WoodpeckerError? {
        await withCheckedContinuation { (c: CheckedContinuation<WoodpeckerError?, Never>) in
            loop.executeOrRun { self.whenClosed { c.resume(returning: $0) } }
        }
    }

    /// Runs `body` on the loop thread with this connection and returns its result. Callable from anywhere.
    public func onLoop<T: Sendable>(_ body: @escaping @Sendable (TCPConnection) -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            loop.executeOrRun { c.resume(returning: body(self)) }
        }
    }
}
