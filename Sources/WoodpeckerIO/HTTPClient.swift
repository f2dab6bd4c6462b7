import CCurl
import CLibUV
import WoodpeckerCore

/// curl_global_init must run once per process before any other curl call; Swift runs this initialiser once.
private let curlGlobalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

/// An HTTP/1.1 client on libcurl's multi interface, driven by one `EventLoop` (one `uv_poll` per socket, one
/// `uv_timer` for curl's timeouts). No thread is blocked and no extra thread is used (except curl's resolver).
///
/// Guarantees:
/// - connections are kept alive and reused between requests to the same host;
/// - at most `maxConcurrentTransfers` run at once; up to `maxQueuedRequests` more wait in FIFO order, beyond
///   that `execute` fails with `.bufferFull`;
/// - every request has a deadline (`HTTPRequest.timeoutMs`, queueing included) and fails with `.timeout`;
/// - errors name the method and URL and say whether a retry may help (`isRetryable`);
/// - response bodies are bounded by `maxResponseBodyBytes`; streamed bodies buffer at most
///   `maxStreamBufferedBytes` before the transfer is paused (backpressure reaches the server through TCP).
///
/// All methods may be called from any thread. Call `close()` before shutting the loop down.
public final class HTTPClient: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var maxConcurrentTransfers = 16
        public var maxQueuedRequests = 4_096
        public var connectTimeoutMs: UInt64 = 5_000
        public var maxResponseBodyBytes = 256 * 1024 * 1024
        public var maxStreamBufferedBytes = 1024 * 1024
        /// Idle keep-alive connections kept for reuse.
        public var maxCachedConnections = 32
        public init() {}
    }

    public let loop: EventLoop
    public let configuration: Configuration

    // Loop-thread state.
    private var multi: UnsafeMutableRawPointer?
    private var timer: UnsafeMutablePointer<uv_timer_t>?
    /// Fails queued requests whose deadline passed while they waited for a slot (runs only while some wait).
    private var queueSweepTimer: UnsafeMutablePointer<uv_timer_t>?
    static let queueSweepIntervalMs: UInt64 = 20
    private var sockets: [curl_socket_t: CurlSocket] = [:]
    private var active: [ObjectIdentifier: HTTPTransfer] = [:]
    private var queue: [HTTPTransfer] = []
    private var queueHead = 0
    private var idleEasy: [UnsafeMutableRawPointer] = []
    private var closed = false
    /// libuv handles whose close callback has not run yet, and who waits for them.
    fileprivate var handlesClosing = 0
    private var closeWaiters: [() -> Void] = []
    /// Highest number of transfers that ran at once (for tests and metrics).
    private var peakActive = 0

    public init(loop: EventLoop, configuration: Configuration = Configuration()) {
        _ = curlGlobalInit
        self.loop = loop
        self.configuration = configuration
    }

    // MARK: public API

    /// Sends `request` and returns the complete response. Throws for transport failures only (refused,
    /// timeout, reset, body too large, client closed), never for an HTTP status.
    /// Cancelling the calling task ends the request with `.clientClosed`.
    public func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        let slot = TransferSlot()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPResponse, any Error>) in
                loop.executeOrRun {
                    let t = HTTPTransfer(request: request, mode: .buffered { c.resume(with: $0.mapError { $0 as any Error }) })
                    slot.transfer = t
                    if slot.cancelled {
                        t.finish(.failure(WoodpeckerError(.clientClosed, "\(t.label): cancelled")))
                    } else {
                        self.submit(t)
                    }
                }
            }
        } onCancel: {
            loop.executeOrRun {
                slot.cancelled = true
                if let t = slot.transfer { self.cancel(t, error: WoodpeckerError(.clientClosed, "\(t.label): cancelled")) }
            }
        }
    }

    /// Sends `request` and returns as soon as the response head arrived; the body follows through
    /// `response.body`, an `AsyncSequence` of chunks. Use `timeoutMs: 0` for endless streams (etcd watch) and
    /// call `body.cancel()` to end them.
    public func stream(_ request: HTTPRequest) async throws -> HTTPStreamingResponse {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPStreamingResponse, any Error>) in
            loop.executeOrRun {
                let state = HTTPStreamState(client: self, maxBufferedBytes: self.configuration.maxStreamBufferedBytes)
                state.onHead = { c.resume(with: $0.mapError { $0 as any Error }) }
                let t = HTTPTransfer(request: request, mode: .streaming(state))
                state.transfer = t
                self.submit(t)
            }
        }
    }

    /// Fails queued and running requests with `.clientClosed`, closes all connections and releases the loop
    /// handles. Further requests fail. Idempotent.
    public func close() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.executeOrRun {
                self.closeWaiters.append { c.resume() }
                self.closeInLoop()
                self.handleClosed(count: 0)
            }
        }
    }

    /// Transfers running now and the peak since creation (loop thread or via `stats()`).
    public func stats() async -> (active: Int, queued: Int, peakActive: Int) {
        await withCheckedContinuation { (c: CheckedContinuation<(active: Int, queued: Int, peakActive: Int), Never>) in
            loop.executeOrRun { c.resume(returning: (self.active.count, self.queue.count - self.queueHead, self.peakActive)) }
        }
    }

    // MARK: scheduling

    private func setUpIfNeeded() {
        guard multi == nil else { return }
        let m = curl_multi_init()!
        multi = m
        let me = Unmanaged.passUnretained(self).toOpaque()
        curlx_multi_socketfn(m, curlSocketCallback)
        curlx_multi_ptr(m, CURLMOPT_SOCKETDATA, me)
        curlx_multi_timerfn(m, curlTimerCallback)
        curlx_multi_ptr(m, CURLMOPT_TIMERDATA, me)
        curlx_multi_long(m, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConcurrentTransfers)
        curlx_multi_long(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, configuration.maxConcurrentTransfers)
        curlx_multi_long(m, CURLMOPT_MAXCONNECTS, configuration.maxCachedConnections)
        let t = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop.uvLoop, t)
        t.pointee.data = me
        timer = t
        let q = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop.uvLoop, q)
        q.pointee.data = me
        queueSweepTimer = q
    }

    private func submit(_ t: HTTPTransfer) {
        t.startedAtMs = Clock.monotonicMillis()
        if closed {
            t.finish(.failure(WoodpeckerError(.clientClosed, "\(t.label): the HTTP client is closed")))
            return
        }
        setUpIfNeeded()
        if active.count < configuration.maxConcurrentTransfers {
            start(t)
        } else if queue.count - queueHead < configuration.maxQueuedRequests {
            queue.append(t)
            if let q = queueSweepTimer, uv_is_active(uvHandle(q)) == 0 {
                uv_timer_start(q, httpQueueSweepCallback, Self.queueSweepIntervalMs, Self.queueSweepIntervalMs)
            }
        } else {
            t.finish(.failure(WoodpeckerError(.bufferFull,
                                              "\(t.label): \(configuration.maxQueuedRequests) requests already waiting for one of \(configuration.maxConcurrentTransfers) transfer slots; retry later")))
        }
    }

    private func startQueued() {
        while active.count < configuration.maxConcurrentTransfers && queueHead < queue.count && !closed {
            let t = queue[queueHead]
            queueHead += 1
            start(t)
        }
        if queueHead > 64 && queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
    }

    fileprivate func sweepQueue() {
        let now = Clock.monotonicMillis()
        var kept: [HTTPTransfer] = []
        var expired: [HTTPTransfer] = []
        for t in queue[queueHead...] {
            if t.request.timeoutMs > 0 && now - t.startedAtMs >= t.request.timeoutMs { expired.append(t) } else { kept.append(t) }
        }
        queue = kept
        queueHead = 0
        if queue.isEmpty, let q = queueSweepTimer { uv_timer_stop(q) }
        for t in expired {
            t.finish(.failure(WoodpeckerError(.timeout,
                                              "\(t.label): timed out after \(now - t.startedAtMs) ms waiting for a transfer slot (timeout \(t.request.timeoutMs) ms)")))
        }
    }

    private func start(_ t: HTTPTransfer) {
        var remaining: UInt64 = 0
        if t.request.timeoutMs > 0 {
            let waited = Clock.monotonicMillis() - t.startedAtMs
            guard waited < t.request.timeoutMs else {
                t.finish(.failure(WoodpeckerError(.timeout,
                                                  "\(t.label): timed out after \(waited) ms waiting for a transfer slot (timeout \(t.request.timeoutMs) ms)")))
                return
            }
            remaining = t.request.timeoutMs - waited
        }
        let easy: UnsafeMutableRawPointer
        if let e = idleEasy.popLast() {
            curl_easy_reset(e)
            easy = e
        } else {
            easy = curl_easy_init()!
        }
        do {
            try t.configure(easy: easy, remainingMs: remaining, connectTimeoutMs: configuration.connectTimeoutMs,
                            maxBodyBytes: configuration.maxResponseBodyBytes)
        } catch {
            recycle(easy)
            t.finish(.failure(error))
            return
        }
        let rc = curl_multi_add_handle(multi, easy)
        guard rc == CURLM_OK else {
            recycle(easy)
            t.finish(.failure(WoodpeckerError(.internalError, "\(t.label): curl_multi_add_handle: \(String(cString: curl_multi_strerror(rc)))")))
            return
        }
        t.easy = easy
        active[ObjectIdentifier(t)] = t
        peakActive = max(peakActive, active.count)
    }

    private func recycle(_ easy: UnsafeMutableRawPointer) {
        if idleEasy.count < configuration.maxConcurrentTransfers && !closed {
            idleEasy.append(easy)
        } else {
            curl_easy_cleanup(easy)
        }
    }

    /// Removes a running transfer from curl and completes it.
    private func complete(_ t: HTTPTransfer, code: CURLcode) {
        guard let easy = t.easy else { return }
        curl_multi_remove_handle(multi, easy)
        t.easy = nil
        active[ObjectIdentifier(t)] = nil
        var status = 0
        curlx_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        let result = t.result(code: code, status: status)
        recycle(easy)
        t.finish(result)
    }

    /// Ends a running or queued transfer early (stream cancelled).
    func cancel(_ t: HTTPTransfer, error: WoodpeckerError) {
        if t.easy != nil {
            t.cancelError = error
            complete(t, code: CURLE_ABORTED_BY_CALLBACK)
            startQueued()
        } else if let i = queue[queueHead...].firstIndex(where: { $0 === t }) {
            queue.remove(at: i)
            t.finish(.failure(error))
        }
    }

    /// Resumes a transfer whose stream consumer caught up.
    func unpause(_ t: HTTPTransfer) {
        guard let easy = t.easy else { return }
        curl_easy_pause(easy, CURLPAUSE_CONT)
    }

    private func closeInLoop() {
        guard !closed else { return }
        closed = true
        let waiting = queue[queueHead...]
        queue.removeAll()
        queueHead = 0
        for t in waiting { t.finish(.failure(WoodpeckerError(.clientClosed, "\(t.label): the HTTP client was closed"))) }
        for t in Array(active.values) {
            t.cancelError = WoodpeckerError(.clientClosed, "\(t.label): the HTTP client was closed")
            complete(t, code: CURLE_ABORTED_BY_CALLBACK)
        }
        for e in idleEasy { curl_easy_cleanup(e) }
        idleEasy.removeAll()
        if let m = multi {
            curl_multi_cleanup(m)  // closes cached connections; may call the socket callback
            multi = nil
        }
        for s in Array(sockets.values) { s.close() }
        sockets.removeAll()
        for case let t? in [timer, queueSweepTimer] {
            uv_timer_stop(t)
            let closing = uvCloseIfOpen(t) { h in
                let client = Unmanaged<HTTPClient>.fromOpaque(h!.pointee.data).takeUnretainedValue()
                h!.deallocate()
                client.handleClosed(count: 1)
            }
            if closing { handlesClosing += 1 }
        }
        timer = nil
        queueSweepTimer = nil
    }

    /// Counts finished handle closes; once closed and none is pending, wakes `close()` callers.
    fileprivate func handleClosed(count: Int) {
        handlesClosing -= count
        guard closed, handlesClosing == 0 else { return }
        let w = closeWaiters
        closeWaiters.removeAll()
        for f in w { f() }
    }

    // MARK: curl callbacks

    fileprivate func socketEvent(_ s: curl_socket_t, what: Int32, socketp: UnsafeMutableRawPointer?) {
        if what == CURL_POLL_REMOVE {
            if let cs = sockets.removeValue(forKey: s) { cs.close() }
            if let m = multi { curl_multi_assign(m, s, nil) }
            return
        }
        let cs: CurlSocket
        if let existing = sockets[s] {
            cs = existing
        } else {
            cs = CurlSocket(client: self, fd: s)
            sockets[s] = cs
        }
        var events: Int32 = 0
        if what == CURL_POLL_IN || what == CURL_POLL_INOUT { events |= Int32(UV_READABLE.rawValue) }
        if what == CURL_POLL_OUT || what == CURL_POLL_INOUT { events |= Int32(UV_WRITABLE.rawValue) }
        uv_poll_start(cs.poll, events, curlPollCallback)
    }

    fileprivate func timerRequested(_ timeoutMs: Int) {
        guard let t = timer else { return }
        if timeoutMs < 0 {
            uv_timer_stop(t)
        } else {
            // Never act from inside curl's own callback: a 0 ms timer fires on the next loop turn.
            uv_timer_start(t, curlUVTimerCallback, UInt64(timeoutMs), 0)
        }
    }

    fileprivate func socketAction(_ s: curl_socket_t, flags: Int32) {
        guard let m = multi else { return }
        var running: Int32 = 0
        curl_multi_socket_action(m, s, flags, &running)
        collectFinished()
    }

    private func collectFinished() {
        guard let m = multi else { return }
        var left: Int32 = 0
        while let msg = curl_multi_info_read(m, &left) {
            guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle else { continue }
            let code = curlx_msg_result(msg)
            var p: UnsafeMutableRawPointer?
            curlx_getinfo_ptr(easy, CURLINFO_PRIVATE, &p)
            guard let p else { continue }
            complete(Unmanaged<HTTPTransfer>.fromOpaque(p).takeUnretainedValue(), code: code)
        }
        startQueued()
    }
}

/// Hands a transfer to a task-cancellation handler. Touched on the loop thread only.
private final class TransferSlot: @unchecked Sendable {
    var transfer: HTTPTransfer?
    var cancelled = false
}

/// A response whose body arrives in chunks.
public struct HTTPStreamingResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: HTTPBodyStream
}

/// The body of a streamed response: chunks in order, ending normally at the end of the response or by
/// throwing the transfer's error. At most `maxStreamBufferedBytes` are buffered; beyond that the transfer pauses
/// until the consumer catches up. Consume it from one task.
public struct HTTPBodyStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let state: HTTPStreamState

    public struct AsyncIterator: AsyncIteratorProtocol {
        let state: HTTPStreamState
        public mutating func next() async throws -> ByteBuffer? {
            try await state.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(state: state) }

    /// Ends the transfer; a waiting or later `next()` returns nil.
    public func cancel() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            state.client.loop.executeOrRun {
                self.state.cancel()
                c.resume()
            }
        }
    }
}

/// Loop-side state of a streamed body.
final class HTTPStreamState: @unchecked Sendable {
    unowned let client: HTTPClient
    let maxBufferedBytes: Int
    weak var transfer: HTTPTransfer?
    var onHead: ((Result<HTTPStreamingResponse, WoodpeckerError>) -> Void)?
    private var chunks: [ByteBuffer] = []
    private var head = 0
    private var bufferedBytes = 0
    private var finished = false
    private var cancelled = false
    private var error: WoodpeckerError?
    private var waiter: ((Result<ByteBuffer?, WoodpeckerError>) -> Void)?
    var paused = false

    init(client: HTTPClient, maxBufferedBytes: Int) {
        self.client = client
        self.maxBufferedBytes = maxBufferedBytes
    }

    func deliverHead(status: Int, headers: HTTPHeaders) {
        guard let f = onHead else { return }
        onHead = nil
        f(.success(HTTPStreamingResponse(status: status, headers: headers, body: HTTPBodyStream(state: self))))
    }

    /// Returns false when the chunk cannot be taken now (the transfer must pause).
    func offer(_ chunk: ByteBuffer) -> Bool {
        if cancelled { return true }
        if bufferedBytes >= maxBufferedBytes {
            paused = true
            return false
        }
        if let w = waiter {
            waiter = nil
            w(.success(chunk))
        } else {
            chunks.append(chunk)
            bufferedBytes += chunk.readableBytes
        }
        return true
    }

    func end(_ e: WoodpeckerError?) {
        if let f = onHead {
            onHead = nil
            f(.failure(e ?? WoodpeckerError(.ioFailure, "HTTP stream ended before a response head")))
        }
        finished = true
        error = cancelled ? nil : e
        if let w = waiter {
            waiter = nil
            if let e = error { w(.failure(e)) } else { w(.success(nil)) }
        }
    }

    func cancel() {
        guard !finished else { return }
        cancelled = true
        chunks.removeAll()
        bufferedBytes = 0
        if let t = transfer {
            client.cancel(t, error: WoodpeckerError(.clientClosed, "\(t.label): stream cancelled by the consumer"))
        } else {
            end(nil)
        }
    }

    func next() async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<ByteBuffer?, any Error>) in
            client.loop.executeOrRun { self.take { c.resume(with: $0.mapError { $0 as any Error }) } }
        }
    }

    private func take(_ resume: @escaping (Result<ByteBuffer?, WoodpeckerError>) -> Void) {
        precondition(waiter == nil, "HTTPBodyStream: one consumer at a time")
        if head < chunks.count {
            let c = chunks[head]
            head += 1
            bufferedBytes -= c.readableBytes
            if head == chunks.count {
                chunks.removeAll(keepingCapacity: true)
                head = 0
            }
            if paused && bufferedBytes <= maxBufferedBytes / 2, let t = transfer {
                paused = false
                client.unpause(t)
            }
            resume(.success(c))
        } else if finished {
            if let e = error { resume(.failure(e)) } else { resume(.success(nil)) }
        } else {
            waiter = resume
            if paused, let t = transfer {
                paused = false
                client.unpause(t)
            }
        }
    }
}

/// One request in flight: its curl handle options, the response being assembled and the completion.
final class HTTPTransfer {
    enum Mode {
        case buffered((Result<HTTPResponse, WoodpeckerError>) -> Void)
        case streaming(HTTPStreamState)
    }

    let request: HTTPRequest
    let mode: Mode
    var easy: UnsafeMutableRawPointer?
    var startedAtMs: UInt64 = 0
    var status = 0
    var headers = HTTPHeaders()
    var headComplete = false
    var body = ByteBuffer()
    var maxBodyBytes = 0
    var bodyTooLarge = false
    var cancelError: WoodpeckerError?
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    private var done = false

    var label: String { "\(request.method) \(request.url)" }

    init(request: HTTPRequest, mode: Mode) {
        self.request = request
        self.mode = mode
        errorBuffer[0] = 0
    }

    deinit {
        if let l = headerList { curl_slist_free_all(l) }
        errorBuffer.deallocate()
    }

    func configure(easy: UnsafeMutableRawPointer, remainingMs: UInt64, connectTimeoutMs: UInt64, maxBodyBytes: Int)
        throws(WoodpeckerError)
    {
        self.maxBodyBytes = maxBodyBytes
        let me = Unmanaged.passUnretained(self).toOpaque()
        let rc = curlx_setopt_str(easy, CURLOPT_URL, request.url)
        guard rc == CURLE_OK else {
            throw WoodpeckerError(.invalidArgument, "\(label): invalid URL (\(String(cString: curl_easy_strerror(rc))))")
        }
        curlx_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        curlx_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        curlx_setopt_ptr(easy, CURLOPT_PRIVATE, me)
        curlx_setopt_ptr(easy, CURLOPT_ERRORBUFFER, errorBuffer)
        curlx_setopt_writefn(easy, curlWriteCallback)
        curlx_setopt_ptr(easy, CURLOPT_WRITEDATA, me)
        curlx_setopt_headerfn(easy, curlHeaderCallback)
        curlx_setopt_ptr(easy, CURLOPT_HEADERDATA, me)
        curlx_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(remainingMs))
        let connectMs = remainingMs > 0 ? min(connectTimeoutMs, remainingMs) : connectTimeoutMs
        curlx_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(connectMs))

        var hdrs = request.headers
        let method = request.method.uppercased()
        if let b = request.body {
            if !hdrs.contains("Content-Type") {
                // curl would otherwise send application/x-www-form-urlencoded.
                hdrs.add("Content-Type", "application/octet-stream")
            }
            curlx_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(b.readableBytes))
            if b.readableBytes == 0 {
                curlx_setopt_str(easy, CURLOPT_COPYPOSTFIELDS, "")
            } else {
                // `request` (and with it the body's storage) lives, unmutated, until the transfer completes, so
                // curl may keep this pointer (POSTFIELDS is not copied).
                b.withUnsafeReadableBytes { p in
                    _ = curlx_setopt_ptr(easy, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: p.baseAddress!))
                }
            }
            if method != "POST" { curlx_setopt_str(easy, CURLOPT_CUSTOMREQUEST, method) }
        } else if method == "GET" {
            curlx_setopt_long(easy, CURLOPT_HTTPGET, 1)
        } else if method == "HEAD" {
            curlx_setopt_long(easy, CURLOPT_NOBODY, 1)
        } else {
            curlx_setopt_str(easy, CURLOPT_CUSTOMREQUEST, method)
        }
        if let l = headerList {
            curl_slist_free_all(l)
            headerList = nil
        }
        for (name, value) in hdrs {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        if let l = headerList { curlx_setopt_slist(easy, CURLOPT_HTTPHEADER, l) }
    }

    fileprivate func headerLine(_ line: UnsafeRawBufferPointer) {
        var s = String(decoding: line, as: UTF8.self)
        while s.last == "\n" || s.last == "\r" || s.last == "\r\n" { s.removeLast() }
        if s.hasPrefix("HTTP/") {
            // A new response head (after 100 Continue or a redirect): start over.
            headers = HTTPHeaders()
            headComplete = false
            let parts = s.split(separator: " ", maxSplits: 2)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        } else if s.isEmpty {
            if status >= 200 {
                headComplete = true
                if case let .streaming(st) = mode { st.deliverHead(status: status, headers: headers) }
            }
        } else if let colon = s.firstIndex(of: ":") {
            let name = String(s[..<colon])
            let value = s[s.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
            headers.add(name, String(value))
        }
    }

    /// Returns the number of bytes taken, or CURL_WRITEFUNC_PAUSE.
    fileprivate func bodyData(_ data: UnsafeRawBufferPointer) -> Int {
        switch mode {
        case .buffered:
            if body.readableBytes + data.count > maxBodyBytes {
                bodyTooLarge = true
                return 0  // makes curl fail with CURLE_WRITE_ERROR
            }
            body.writeBytes(data)
            return data.count
        case let .streaming(st):
            if !headComplete {
                headComplete = true
                st.deliverHead(status: status, headers: headers)
            }
            var chunk = ByteBuffer(capacity: data.count)
            chunk.writeBytes(data)
            return st.offer(chunk) ? data.count : Int(CURL_WRITEFUNC_PAUSE)
        }
    }

    func result(code: CURLcode, status: Int) -> Result<HTTPResponse, WoodpeckerError> {
        if let e = cancelError { return .failure(e) }
        if code == CURLE_OK {
            return .success(HTTPResponse(status: status, headers: headers, body: body))
        }
        let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            return .failure(WoodpeckerError(.timeout, "\(label): timed out (timeout \(request.timeoutMs) ms): \(detail)"))
        case CURLE_COULDNT_CONNECT:
            return .failure(WoodpeckerError(.ioFailure, "\(label): could not connect: \(detail); is the server running?",
                                            retryable: true))
        case CURLE_COULDNT_RESOLVE_HOST:
            return .failure(WoodpeckerError(.ioFailure, "\(label): could not resolve host: \(detail)", retryable: true))
        case CURLE_WRITE_ERROR where bodyTooLarge:
            return .failure(WoodpeckerError(.bufferFull, "\(label): response body exceeds the bound of \(maxBodyBytes) bytes"))
        case CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_PARTIAL_FILE:
            return .failure(WoodpeckerError(.ioFailure, "\(label): \(detail)", retryable: true))
        default:
            return .failure(WoodpeckerError(.ioFailure, "\(label): \(detail) (curl code \(code.rawValue))"))
        }
    }

    func finish(_ r: Result<HTTPResponse, WoodpeckerError>) {
        guard !done else { return }
        done = true
        switch mode {
        case let .buffered(f):
            f(r)
        case let .streaming(st):
            switch r {
            case .success: st.end(nil)
            case let .failure(e): st.end(e)
            }
        }
    }
}

/// One socket curl asked us to watch.
private final class CurlSocket {
    unowned let client: HTTPClient
    let fd: curl_socket_t
    let poll = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
    private var closed = false

    init(client: HTTPClient, fd: curl_socket_t) {
        self.client = client
        self.fd = fd
        uv_poll_init_socket(client.loop.uvLoop, poll, fd)
        poll.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    func close() {
        guard !closed else { return }
        closed = true
        uv_poll_stop(poll)
        let closing = uvCloseIfOpen(poll) { h in
            let u = Unmanaged<CurlSocket>.fromOpaque(h!.pointee.data)
            h!.deallocate()
            let s = u.takeRetainedValue()
            s.client.handleClosed(count: 1)
        }
        if closing { client.handlesClosing += 1 }
    }
}

private let curlSocketCallback: curl_socket_callback = { _, s, what, userp, socketp in
    Unmanaged<HTTPClient>.fromOpaque(userp!).takeUnretainedValue().socketEvent(s, what: what, socketp: socketp)
    return 0
}

private let curlTimerCallback: curl_multi_timer_callback = { _, timeoutMs, userp in
    Unmanaged<HTTPClient>.fromOpaque(userp!).takeUnretainedValue().timerRequested(timeoutMs)
    return 0
}

private let curlUVTimerCallback: uv_timer_cb = { t in
    Unmanaged<HTTPClient>.fromOpaque(t!.pointee.data).takeUnretainedValue().socketAction(curlx_socket_timeout, flags: 0)
}

private let httpQueueSweepCallback: uv_timer_cb = { t in
    Unmanaged<HTTPClient>.fromOpaque(t!.pointee.data).takeUnretainedValue().sweepQueue()
}

private let curlPollCallback: uv_poll_cb = { h, status, events in
    let cs = Unmanaged<CurlSocket>.fromOpaque(h!.pointee.data).takeUnretainedValue()
    var flags: Int32 = 0
    if status < 0 { flags |= CURL_CSELECT_ERR }
    if events & Int32(UV_READABLE.rawValue) != 0 { flags |= CURL_CSELECT_IN }
    if events & Int32(UV_WRITABLE.rawValue) != 0 { flags |= CURL_CSELECT_OUT }
    cs.client.socketAction(cs.fd, flags: flags)
}

private let curlWriteCallback: curl_write_callback = { ptr, size, n, userdata in
    let t = Unmanaged<HTTPTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    return t.bodyData(UnsafeRawBufferPointer(start: ptr, count: size * n))
}

private let curlHeaderCallback: curl_write_callback = { ptr, size, n, userdata in
    let t = Unmanaged<HTTPTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    t.headerLine(UnsafeRawBufferPointer(start: ptr, count: size * n))
    return size * n
}
