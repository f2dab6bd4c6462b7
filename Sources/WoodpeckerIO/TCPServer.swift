import CLibUV
import WoodpeckerCore

/// Listener settings.
public struct TCPServerOptions: Sendable {
    /// listen(2) backlog.
    public var backlog: Int32 = 1024
    /// Connections beyond this are accepted and closed at once.
    public var maxConnections = 10_000
    /// Settings for every accepted connection.
    public var connection = TCPConnectionOptions()

    public init() {}
}

/// A TCP listener owned by an `EventLoop`. Each accepted connection gets a handler from `handlerFactory`
/// (called on the loop thread) and is tracked until it closes.
///
/// `close()` stops listening and closes every connection; once it returns, no libuv handle of the server or its
/// connections is open any more.
public final class TCPServer: @unchecked Sendable {
    public let loop: EventLoop
    /// The address actually bound (with the real port when 0 was asked for).
    public let localAddress: SocketAddress
    /// The bound port.
    public var port: Int { localAddress.port }
    public let options: TCPServerOptions

    private let listener: UnsafeMutablePointer<uv_tcp_t>
    private let handlerFactory: (TCPConnection) -> any TCPConnectionHandler
    // Loop-thread state.
    private var connections: [ObjectIdentifier: TCPConnection] = [:]
    private var listenerClosed = false
    private var closing = false
    private var closeWaiters: [() -> Void] = []
    /// Connections refused because `maxConnections` was reached (for tests and metrics).
    public private(set) var rejectedConnections = 0

    /// Binds `host:port` (port 0 picks a free port; read it from `port`) and starts accepting.
    public static func bind(loop: EventLoop, host: String, port: Int, options: TCPServerOptions = TCPServerOptions(),
                            handlerFactory: @escaping @Sendable (TCPConnection) -> any TCPConnectionHandler)
        async throws -> TCPServer
    {
        let address = try await SocketAddress.resolve(host, port: port, loop: loop)
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<TCPServer, any Error>) in
            loop.executeOrRun {
                c.resume(with: Result {
                    try TCPServer(loop: loop, address: address, name: "\(host):\(port)", options: options,
                                  handlerFactory: handlerFactory)
                })
            }
        }
    }

    private init(loop: EventLoop, address: SocketAddress, name: String, options: TCPServerOptions,
                 handlerFactory: @escaping (TCPConnection) -> any TCPConnectionHandler) throws
    {
        loop.preconditionInLoop()
        self.loop = loop
        self.options = options
        self.handlerFactory = handlerFactory
        let l = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        listener = l
        uv_tcp_init(loop.uvLoop, l)
        var rc = address.withSockaddr { uv_tcp_bind(l, $0, 0) }
        if rc == 0 { rc = uv_listen(uvStream(l), options.backlog, tcpServerConnectionCallback) }
        if rc != 0 {
            uvCloseIfOpen(l) { $0?.deallocate() }
            throw WoodpeckerError(.ioFailure, "listen on \(name): \(uvErrorText(rc)); choose another address or port")
        }
        localAddress = SocketAddress.local(of: l) ?? address
        // The listener handle owns one reference until its close callback: a server that is never closed leaks
        // rather than leaving libuv with a dangling pointer.
        listener.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Number of open connections. Loop thread only.
    public var connectionCount: Int {
        loop.preconditionInLoop()
        return connections.count
    }

    fileprivate func accept(status: Int32) {
        guard status == 0, !closing else { return }
        let tcp = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.uvLoop, tcp)
        let rc = uv_accept(uvStream(listener), uvStream(tcp))
        if rc != 0 || connections.count >= options.maxConnections {
            if rc == 0 { rejectedConnections += 1 }
            uvCloseIfOpen(tcp) { $0?.deallocate() }
            return
        }
        let conn = TCPConnection(loop: loop, tcp: tcp, options: options.connection)
        connections[ObjectIdentifier(conn)] = conn
        conn.onClosed = { [unowned self] c in self.connectionDidClose(c) }
        conn.handler = handlerFactory(conn)
        conn.start()
    }

    private func connectionDidClose(_ c: TCPConnection) {
        connections[ObjectIdentifier(c)] = nil
        checkClosed()
    }

    private func checkClosed() {
        guard closing, listenerClosed, connections.isEmpty else { return }
        let w = closeWaiters
        closeWaiters.removeAll()
        for f in w { f() }
    }

    /// Stops listening and closes every connection (orderly, bounded by each connection's `closeTimeoutMs`);
    /// `done` runs on the loop once the listener and all connections are closed. Loop thread only.
    public func closeInLoop(_ done: (() -> Void)? = nil) {
        loop.preconditionInLoop()
        if let done { closeWaiters.append(done) }
        if closing {
            checkClosed()
            return
        }
        closing = true
        uvCloseIfOpen(listener, tcpServerCloseCallback)
        for c in Array(connections.values) { c.close() }
    }

    fileprivate func listenerDidClose() {
        listenerClosed = true
        listener.deallocate()
        checkClosed()
    }

    /// Stops listening, closes every connection and waits until all of them are closed. Callable from anywhere.
    public func close() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.executeOrRun { self.closeInLoop { c.resume() } }
        }
    }
}

private let tcpServerConnectionCallback: uv_connection_cb = { server, status in
    Unmanaged<TCPServer>.fromOpaque(server!.pointee.data).takeUnretainedValue().accept(status: status)
}

private let tcpServerCloseCallback: uv_close_cb = { handle in
    let u = Unmanaged<TCPServer>.fromOpaque(handle!.pointee.data)
    u.takeUnretainedValue().listenerDidClose()
    u.release()
}
