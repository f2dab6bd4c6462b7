import CLibUV
import WoodpeckerCore

/// Receives the events of one `TCPConnection`. Every method runs on the connection's loop thread, one at a time.
public protocol TCPConnectionHandler: AnyObject {
    /// The connection is established and reading has started.
    func connectionActive(_ connection: TCPConnection)
    /// New bytes arrived. `data` holds every byte not consumed so far: advance its reader index past what you
    /// handled (e.g. with `readSlice`); bytes left unread are presented again, followed by newer bytes, on the
    /// next call. Unread bytes are bounded by `TCPConnectionOptions.maxUnreadBytes`.
    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer)
    /// `pendingWriteBytes` crossed the high watermark (`writable == false`) or fell back to the low watermark.
    func connectionWritabilityChanged(_ connection: TCPConnection, writable: Bool)
    /// Called exactly once, after the socket is closed. `error` is nil for an orderly close (ours or the peer's
    /// end of stream) and names the cause otherwise (reset, idle timeout, a bound exceeded).
    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?)
}

extension TCPConnectionHandler {
    public func connectionActive(_ connection: TCPConnection) {}
    public func connectionWritabilityChanged(_ connection: TCPConnection, writable: Bool) {}
}

/// Per-connection settings. Every buffer has a bound.
public struct TCPConnectionOptions: Sendable {
    /// Disable Nagle's algorithm (TCP_NODELAY).
    public var noDelay = true
    /// `pendingWriteBytes` above this makes the connection unwritable (`writabilityChanged(false)`).
    public var writeHighWatermarkBytes = 1024 * 1024
    /// ... and at or below this writable again.
    public var writeLowWatermarkBytes = 256 * 1024
    /// Hard bound on bytes queued for writing; a write beyond it closes the connection with `.bufferFull`.
    public var maxPendingWriteBytes = 256 * 1024 * 1024
    /// Hard bound on received bytes the handler left unread; beyond it the connection closes with `.bufferFull`.
    public var maxUnreadBytes = Limits.maxRequestSizeBytes + 64 * 1024
    /// The stream carries frames that each start with a 4-byte big-endian length of the rest (Kafka's framing and
    /// the LogStore protocol's). It only sizes the receive buffer: once a frame's length has arrived, room for the
    /// whole frame (up to `frameReserveLimitBytes` ahead) is reserved, so that a large frame fills one allocation
    /// instead of regrowing, and copying, the buffer as it arrives. Delivery is the same either way.
    public var lengthPrefixedFrames = false
    /// Reserve at most this many bytes ahead of what arrived; a peer that sends only a length reserves no more
    /// (reserved pages are not touched until bytes arrive, but address space is). Larger frames grow by doubling.
    public var frameReserveLimitBytes = 16 * 1024 * 1024
    /// Close the connection with `.timeout` after this long without reads, writes or write completions. 0 = never.
    public var idleTimeoutMs: UInt64 = 0
    /// An orderly `close()` waits at most this long for queued writes to drain before aborting.
    public var closeTimeoutMs: UInt64 = 5_000

    public init() {}
}

/// One TCP connection owned by an `EventLoop`.
///
/// Loop-thread object: call its methods on the loop thread only (from handler callbacks, loop timers, or tasks
/// started with `Task(executorPreference: loop)`); the `async` conveniences in `TCPClient.swift` may be called
/// from anywhere. Guarantees:
/// - reads are delivered in order to `handler`; `pauseReading()` stops delivery until `resumeReading()`;
/// - `write` only queues: queued buffers are sent together (one `uv_write` of several buffers) in the loop's check
///   phase, so writes issued during one batch of read callbacks leave in one system call;
/// - bytes are written in the order of `write` calls; `pendingWriteBytes` counts queued and in-flight bytes;
/// - `connectionClosed` is delivered exactly once and the handler is released afterwards.
public final class TCPConnection: @unchecked Sendable {
    public let loop: EventLoop
    public let options: TCPConnectionOptions
    /// The peer's address, "ip:port".
    public let peerAddress: String
    /// Our side's address, "ip:port".
    public let localAddress: String
    /// Receives this connection's events. Replace it only on the loop thread.
    public var handler: (any TCPConnectionHandler)?

    /// Bytes accepted by `write` and not yet confirmed written to the socket.
    public private(set) var pendingWriteBytes = 0
    /// False between crossing the high watermark and draining to the low watermark.
    public private(set) var isWritable = true
    /// True once `close()` or an error started closing; no more reads are delivered after that.
    public var isClosing: Bool { state != .open }
    /// True after `connectionClosed` was delivered.
    public var isClosed: Bool { state == .closed }
    /// Number of `uv_write` calls issued so far (each carries every buffer queued since the previous one).
    public private(set) var flushCount = 0
    /// True while the application asked to stop reading.
    public private(set) var isReadingPaused = false

    private enum State { case open, closing, closed }
    private var state = State.open
    let tcp: UnsafeMutablePointer<uv_tcp_t>
    private var reading = false
    private var handleClosing = false
    private var inbound = ByteBuffer()
    private var outbound: [ByteBuffer] = []
    private var outboundCompletions: [(WoodpeckerError?) -> Void] = []
    private var flushScheduled = false
    private var shutdownRequested = false
    private var timer: LoopTimer?
    private var lastActivityMs: UInt64 = 0
    private var closeError: WoodpeckerError?
    private var closeWaiters: [(WoodpeckerError?) -> Void] = []
    /// Called after `connectionClosed` (the server uses it to forget the connection).
    var onClosed: ((TCPConnection) -> Void)?

    /// Takes over an initialised, connected `uv_tcp_t` (heap-allocated; freed when the connection closes).
    init(loop: EventLoop, tcp: UnsafeMutablePointer<uv_tcp_t>, options: TCPConnectionOptions) {
        loop.preconditionInLoop()
        self.loop = loop
        self.tcp = tcp
        self.options = options
        peerAddress = SocketAddress.peer(of: tcp)?.description ?? "?"
        localAddress = SocketAddress.local(of: tcp)?.description ?? "?"
        // The handle owns one reference to the connection until its close callback.
        tcp.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Starts reading and the idle timer, then tells the handler the connection is active.
    func start() {
        if options.noDelay { uv_tcp_nodelay(tcp, 1) }
        lastActivityMs = uv_now(loop.uvLoop)
        if options.idleTimeoutMs > 0 {
            armTimer(afterMs: options.idleTimeoutMs)
        }
        startReading()
        handler?.connectionActive(self)
    }

    // MARK: reading

    /// Stops reading from the socket (`uv_read_stop`); the kernel's receive window then pushes back on the peer.
    public func pauseReading() {
        loop.preconditionInLoop()
        isReadingPaused = true
        if reading {
            uv_read_stop(uvStream(tcp))
            reading = false
        }
    }

    /// Resumes reading. Bytes left unread by the handler are presented again right away (on the next loop turn).
    public func resumeReading() {
        loop.preconditionInLoop()
        guard isReadingPaused else { return }
        isReadingPaused = false
        guard state == .open else { return }
        startReading()
        if !inbound.isEmpty {
            loop.execute { self.deliverUnread() }
        }
    }

    private func startReading() {
        guard !reading, state == .open, !isReadingPaused else { return }
        let rc = uv_read_start(uvStream(tcp), tcpAllocCallback, tcpReadCallback)
        if rc != 0 {
            abort(error: WoodpeckerError(.ioFailure, "read from \(peerAddress): uv_read_start \(uvErrorText(rc))"))
            return
        }
        reading = true
    }

    fileprivate func didRead(_ nread: Int, _ base: UnsafeMutablePointer<CChar>?) {
        if nread > 0 {
            lastActivityMs = uv_now(loop.uvLoop)
            inbound.writeBytes(UnsafeRawBufferPointer(start: base, count: nread))
            reserveForFrame()
            deliver()
        } else if nread == Int(UV_EOF.rawValue) {
            reading = false
            close()
        } else if nread < 0 {
            reading = false
            abort(error: WoodpeckerError(.ioFailure, "read from \(peerAddress): \(uvErrorText(Int32(nread)))",
                                         retryable: true))
        }
    }

    private func deliverUnread() {
        if !inbound.isEmpty && !isReadingPaused { deliver() }
    }

    private func deliver() {
        guard state == .open, let h = handler else { return }
        // Hand the buffer out by value so the handler may call back into this connection freely.
        var data = ByteBuffer()
        swap(&data, &inbound)
        h.connectionRead(self, &data)
        if data.readerIndex > 0 {
            // The handler may keep what it consumed as slices sharing this storage; appending to it would then copy
            // all of it (copy-on-write). The bytes left over move to a buffer of their own instead, copying only them,
            // with room for the next read (or the rest of their frame) so that it does not regrow at once.
            var rest = ByteBuffer()
            rest.reserveCapacity(max(data.readableBytes + loop.readScratch.count, frameRoom(data)))
            rest.writeBuffer(data)
            data = rest
        }
        inbound = data
        if inbound.readableBytes > options.maxUnreadBytes {
            abort(error: WoodpeckerError(.bufferFull,
                                         "connection from \(peerAddress): \(inbound.readableBytes) unread bytes exceed the bound of \(options.maxUnreadBytes); the handler must consume or pause reading"))
        }
    }

    /// With `lengthPrefixedFrames`: makes room for the rest of the frame at the front of the receive buffer, plus
    /// one read beyond it (a read may carry the next frame's first bytes).
    private func reserveForFrame() {
        let room = frameRoom(inbound)
        if inbound.storageCapacity < inbound.readerIndex + room {
            inbound.reserveCapacity(inbound.readerIndex + room - inbound.writerIndex)
        }
    }

    /// The bytes `buffer`'s readable part should have room for: its first frame whole plus one read, when
    /// `lengthPrefixedFrames` is set and that frame's length has arrived and the frame is not complete; else 0.
    private func frameRoom(_ buffer: ByteBuffer) -> Int {
        guard options.lengthPrefixedFrames, buffer.readableBytes >= 4,
              let length = try? buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return 0 }
        let frame = 4 + Int(length)
        guard frame > buffer.readableBytes, frame <= options.maxUnreadBytes else { return 0 }
        return buffer.readableBytes + min(frame - buffer.readableBytes, options.frameReserveLimitBytes) + loop.readScratch.count
    }

    // MARK: writing

    /// Queues `data` for sending; `completion` (if any) runs on the loop once the bytes were handed to the kernel,
    /// or with the error that prevented it. Writes on a closing connection fail with `.clientClosed`.
    public func write(_ data: ByteBuffer, completion: ((WoodpeckerError?) -> Void)? = nil) {
        loop.preconditionInLoop()
        guard state == .open, !shutdownRequested else {
            completion?(WoodpeckerError(.clientClosed, "write to \(peerAddress): connection is closing"))
            return
        }
        outbound.append(data)
        if let completion { outboundCompletions.append(completion) }
        pendingWriteBytes += data.readableBytes
        lastActivityMs = uv_now(loop.uvLoop)
        if pendingWriteBytes > options.maxPendingWriteBytes {
            abort(error: WoodpeckerError(.bufferFull,
                                         "write to \(peerAddress): \(pendingWriteBytes) pending bytes exceed the bound of \(options.maxPendingWriteBytes); stop writing while the connection is not writable"))
            return
        }
        if isWritable && pendingWriteBytes > options.writeHighWatermarkBytes {
            isWritable = false
            handler?.connectionWritabilityChanged(self, writable: false)
        }
        if !flushScheduled {
            flushScheduled = true
            loop.execute { self.flush() }
        }
    }

    /// Sends everything queued now instead of waiting for the check phase.
    public func flush() {
        loop.preconditionInLoop()
        flushScheduled = false
        guard !handleClosing, !outbound.isEmpty || !outboundCompletions.isEmpty else { return }
        let batch = WriteBatch(buffers: outbound, completions: outboundCompletions)
        outbound.removeAll(keepingCapacity: true)
        outboundCompletions.removeAll(keepingCapacity: true)
        let bufs = UnsafeMutablePointer<uv_buf_t>.allocate(capacity: batch.buffers.count)
        defer { bufs.deallocate() }
        var n: UInt32 = 0
        for b in batch.buffers where b.readableBytes > 0 {
            // The batch keeps each buffer alive and unmutated until the write callback, so the array storage
            // these pointers refer to does not move or get freed while libuv uses them.
            b.withUnsafeReadableBytes { p in
                bufs[Int(n)] = uv_buf_init(UnsafeMutablePointer(mutating: p.baseAddress!.assumingMemoryBound(to: CChar.self)),
                                          UInt32(p.count))
            }
            batch.bytes += b.readableBytes
            n += 1
        }
        if n == 0 {
            batch.complete(nil)
            return
        }
        let req = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passRetained(batch).toOpaque()
        // libuv copies the uv_buf_t array, so `bufs` can be freed on return.
        let rc = uv_write(req, uvStream(tcp), bufs, n, tcpWriteCallback)
        flushCount += 1
        if rc != 0 {
            Unmanaged<WriteBatch>.fromOpaque(req.pointee.data).release()
            req.deallocate()
            pendingWriteBytes -= batch.bytes
            let e = WoodpeckerError(.ioFailure, "write to \(peerAddress): \(uvErrorText(rc))", retryable: true)
            batch.complete(e)
            abort(error: e)
        }
    }

    fileprivate func didWrite(_ batch: WriteBatch, status: Int32) {
        pendingWriteBytes -= batch.bytes
        if status < 0 {
            let e = WoodpeckerError(.ioFailure, "write to \(peerAddress): \(uvErrorText(status))", retryable: true)
            batch.complete(e)
            if status != Int32(UV_ECANCELED.rawValue) { abort(error: e) }
            return
        }
        lastActivityMs = uv_now(loop.uvLoop)
        batch.complete(nil)
        if !isWritable && pendingWriteBytes <= options.writeLowWatermarkBytes && state == .open {
            isWritable = true
            handler?.connectionWritabilityChanged(self, writable: true)
        }
    }

    // MARK: closing

    /// Orderly close: stops reading, sends what is queued, shuts the write side down, then closes the socket.
    /// Bounded by `closeTimeoutMs`. The handler's `connectionClosed` follows. Idempotent.
    public func close() {
        loop.preconditionInLoop()
        guard state == .open else { return }
        state = .closing
        stopReadingForClose()
        flush()
        guard !handleClosing else { return }
        shutdownRequested = true
        let req = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        req.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        // Keeps us alive until the shutdown callback even if the handle closes first.
        _ = Unmanaged.passRetained(self)
        let rc = uv_shutdown(req, uvStream(tcp), tcpShutdownCallback)
        if rc != 0 {
            Unmanaged.passUnretained(self).release()
            req.deallocate()
            closeHandle()
            return
        }
        armTimer(afterMs: options.closeTimeoutMs)
    }

    /// Closes the socket at once; queued writes fail. `error` is reported to the handler. Idempotent.
    public func abort(error: WoodpeckerError? = nil) {
        loop.preconditionInLoop()
        if closeError == nil { closeError = error }
        state = state == .closed ? .closed : .closing
        stopReadingForClose()
        closeHandle()
    }

    fileprivate func didShutdown() {
        closeHandle()
    }

    private func stopReadingForClose() {
        if reading {
            uv_read_stop(uvStream(tcp))
            reading = false
        }
    }

    private func closeHandle() {
        guard !handleClosing else { return }
        handleClosing = true
        state = .closing
        timer?.close()
        timer = nil
        // Closed already when the loop shut down under a pending shutdown request: nothing more to do here.
        uvCloseIfOpen(tcp, tcpCloseCallback)
    }

    fileprivate func didClose() {
        state = .closed
        let e = closeError
        let leftover = outboundCompletions
        outbound.removeAll()
        outboundCompletions.removeAll()
        pendingWriteBytes = 0
        inbound = ByteBuffer()
        for c in leftover { c(WoodpeckerError(.clientClosed, "write to \(peerAddress): connection closed before sending")) }
        handler?.connectionClosed(self, error: e)
        handler = nil
        let waiters = closeWaiters
        closeWaiters.removeAll()
        for w in waiters { w(e) }
        onClosed?(self)
        onClosed = nil
        tcp.deallocate()
    }

    /// Runs `body` once the connection is closed (at once if it already is), with the close error.
    public func whenClosed(_ body: @escaping (WoodpeckerError?) -> Void) {
        loop.preconditionInLoop()
        if state == .closed { body(closeError) } else { closeWaiters.append(body) }
    }

    // MARK: timers

    private func armTimer(afterMs ms: UInt64) {
        if timer == nil {
            timer = LoopTimer(loop: loop) { [unowned self] in self.timerFired() }
        }
        timer!.start(afterMs: max(ms, 1))
    }

    private func timerFired() {
        if state == .closing {
            abort(error: WoodpeckerError(.timeout,
                                         "close of connection \(peerAddress): queued writes did not drain within \(options.closeTimeoutMs) ms; aborted"))
            return
        }
        let idle = options.idleTimeoutMs
        guard idle > 0 else { return }
        let elapsed = uv_now(loop.uvLoop) &- lastActivityMs
        if elapsed >= idle {
            abort(error: WoodpeckerError(.timeout,
                                         "connection \(peerAddress) idle for \(elapsed) ms (idle timeout \(idle) ms); closed"))
        } else {
            armTimer(afterMs: idle - elapsed)
        }
    }
}

/// The buffers of one `uv_write`, kept alive until its callback.
final class WriteBatch {
    let buffers: [ByteBuffer]
    let completions: [(WoodpeckerError?) -> Void]
    var bytes = 0
    init(buffers: [ByteBuffer], completions: [(WoodpeckerError?) -> Void]) {
        self.buffers = buffers
        self.completions = completions
    }
    func complete(_ e: WoodpeckerError?) {
        for c in completions { c(e) }
    }
}

private let tcpAllocCallback: uv_alloc_cb = { handle, _, buf in
    let c = Unmanaged<TCPConnection>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
    let scratch = c.loop.readScratch
    buf!.pointee = uv_buf_init(scratch.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(scratch.count))
}

private let tcpReadCallback: uv_read_cb = { stream, nread, buf in
    let c = Unmanaged<TCPConnection>.fromOpaque(stream!.pointee.data).takeUnretainedValue()
    c.didRead(nread, buf?.pointee.base)
}

private let tcpWriteCallback: uv_write_cb = { req, status in
    let batch = Unmanaged<WriteBatch>.fromOpaque(req!.pointee.data).takeRetainedValue()
    let c = Unmanaged<TCPConnection>.fromOpaque(req!.pointee.handle.pointee.data).takeUnretainedValue()
    req!.deallocate()
    c.didWrite(batch, status: status)
}

private let tcpShutdownCallback: uv_shutdown_cb = { req, _ in
    let c = Unmanaged<TCPConnection>.fromOpaque(req!.pointee.data).takeRetainedValue()
    req!.deallocate()
    c.didShutdown()
}

private let tcpCloseCallback: uv_close_cb = { handle in
    let u = Unmanaged<TCPConnection>.fromOpaque(handle!.pointee.data)
    u.takeUnretainedValue().didClose()
    u.release()
}
