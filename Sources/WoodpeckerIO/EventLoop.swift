import CLibUV
import CWoodpeckerShims
import Synchronization
import WoodpeckerCore

#if canImport(Glibc)
import Glibc
#endif

/// One libuv loop running on its own thread, usable as a Swift `SerialExecutor` and `TaskExecutor`.
///
/// Guarantees:
/// - Every job and every `execute` closure runs on the loop thread, in FIFO order per submitting thread.
/// - Jobs enqueued from the loop thread itself go to a lock-free local queue (no syscall); jobs from other
///   threads take a mutex and at most one `uv_async_send` per drain.
/// - The queue is drained in the same loop iteration (prepare and check phases, and the async callback),
///   at most `maxJobsPerDrain` jobs at a time so I/O is never starved.
///
/// Rules for callers (see ARCHITECTURE.md §4): start loop-bound tasks with `Task(executorPreference: loop)`;
/// actors owning loop state return `loop.asUnownedSerialExecutor()` as their `unownedExecutor`; never block
/// the loop thread (use `runBlocking`).
public final class EventLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    public let name: String
    /// The libuv loop. Touch it only on the loop thread.
    public let uvLoop: UnsafeMutablePointer<uv_loop_t>
    static let maxJobsPerDrain = 4096

    private enum Work {
        case job(UnownedJob)
        case closure(@Sendable () -> Void)
    }

    // Loop-thread only state.
    private var local: [Work] = []
    private var running: [Work] = []
    private let asyncHandle: UnsafeMutablePointer<uv_async_t>
    private let prepareHandle: UnsafeMutablePointer<uv_prepare_t>
    private let checkHandle: UnsafeMutablePointer<uv_check_t>
    private let idleHandle: UnsafeMutablePointer<uv_idle_t>
    private var idleActive = false
    /// Set on the loop thread by `shutdown` once it has closed every handle. Work still queued, or queued
    /// later by close callbacks, is dropped: it could only touch handles that are closed already (closing one
    /// again aborts in libuv's `uv_close`).
    private var handlesClosed = false
    /// Scratch memory for libuv reads on this loop. Every read callback copies the bytes out before libuv asks
    /// for the next buffer, so one buffer serves all streams of the loop.
    let readScratch: UnsafeMutableRawBufferPointer = .allocate(byteCount: 64 * 1024, alignment: 16)

    private struct Remote {
        var work: [Work] = []
        var signaled = false
        var closed = false
    }
    private let remote = Mutex(Remote())
    private let token = Atomic<UInt>(0)
    private var thread = pthread_t()
    private let stopped = Atomic<Bool>(false)

    /// A write to a socket the peer reset raises SIGPIPE, whose default action ends the process without a word;
    /// libuv reports the error to the write callback instead once the signal is ignored.
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Starts the loop thread and returns once it is running.
    public init(name: String = "wp-loop") {
        Self.ignoreSIGPIPE
        self.name = name
        uvLoop = .allocate(capacity: 1)
        precondition(uv_loop_init(uvLoop) == 0, "uv_loop_init failed")
        asyncHandle = .allocate(capacity: 1)
        prepareHandle = .allocate(capacity: 1)
        checkHandle = .allocate(capacity: 1)
        idleHandle = .allocate(capacity: 1)
        let me = Unmanaged.passUnretained(self).toOpaque()
        uv_async_init(uvLoop, asyncHandle, eventLoopAsyncCallback)
        asyncHandle.pointee.data = me
        uv_prepare_init(uvLoop, prepareHandle)
        prepareHandle.pointee.data = me
        uv_prepare_start(prepareHandle, eventLoopPrepareCallback)
        uv_unref(UnsafeMutableRawPointer(prepareHandle).assumingMemoryBound(to: uv_handle_t.self))
        uv_check_init(uvLoop, checkHandle)
        checkHandle.pointee.data = me
        uv_check_start(checkHandle, eventLoopCheckCallback)
        uv_unref(UnsafeMutableRawPointer(checkHandle).assumingMemoryBound(to: uv_handle_t.self))
        uv_idle_init(uvLoop, idleHandle)
        idleHandle.pointee.data = me
        uv_unref(UnsafeMutableRawPointer(idleHandle).assumingMemoryBound(to: uv_handle_t.self))

        let started = Atomic<Bool>(false)
        let box = Unmanaged.passRetained(ThreadStart(loop: self))
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
            start.loop.threadMain()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        thread = t
        _ = started
        while token.load(ordering: .acquiring) == 0 { sched_yield() }
    }

    private final class ThreadStart {
        let loop: EventLoop
        init(loop: EventLoop) { self.loop = loop }
    }

    private func threadMain() {
        token.store(UInt(wp_thread_token()), ordering: .releasing)
        uv_run(uvLoop, UV_RUN_DEFAULT)
    }

    deinit {
        uvLoop.deallocate()
        readScratch.deallocate()
    }

    /// True when called on this loop's thread.
    public var inLoop: Bool { UInt(wp_thread_token()) == token.load(ordering: .relaxed) }

    public func preconditionInLoop(_ file: StaticString = #fileID, line: UInt = #line) {
        precondition(inLoop, "must run on event loop \(name)", file: file, line: line)
    }

    // MARK: executor conformance

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }
    public func checkIsolated() { precondition(inLoop, "not on event loop \(name)") }
    public func isIsolatingCurrentContext() -> Bool? { inLoop }

    /// Runs `body` on the loop thread (soon, never inline).
    public func execute(_ body: @escaping @Sendable () -> Void) {
        submit(.closure(body))
    }

    /// Runs `body` now if on the loop thread, else schedules it.
    public func executeOrRun(_ body: @escaping @Sendable () -> Void) {
        if inLoop { body() } else { submit(.closure(body)) }
    }

    private func submit(_ w: Work) {
        if inLoop {
            if handlesClosed { return }
            local.append(w)
            if local.count == 1 && !idleActive { wakeIdle() }
            return
        }
        let signal = remote.withLock { r -> Bool in
            if r.closed { return false }
            r.work.append(w)
            if r.signaled { return false }
            r.signaled = true
            return true
        }
        if signal { uv_async_send(asyncHandle) }
    }

    /// Keeps poll from blocking while local work is queued from inside an I/O callback.
    private func wakeIdle() {
        // The check phase runs right after I/O callbacks, so local work enqueued there is drained in the same
        // iteration; the idle handle only matters when work is enqueued from prepare/timers.
        idleActive = true
        uv_idle_start(idleHandle, eventLoopIdleCallback)
    }

    fileprivate func drain() {
        if idleActive {
            idleActive = false
            uv_idle_stop(idleHandle)
        }
        var budget = Self.maxJobsPerDrain
        while budget > 0 {
            let more = remote.withLock { r -> [Work] in
                r.signaled = false
                if r.work.isEmpty { return [] }
                let w = r.work
                r.work.removeAll(keepingCapacity: true)
                return w
            }
            local.append(contentsOf: more)
            if local.isEmpty { return }
            swap(&local, &running)
            // Run what was queued; work queued while running lands in `local` for the next round.
            var i = 0
            while i < running.count && !handlesClosed {
                switch running[i] {
                case let .job(j):
                    j.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
                case let .closure(c):
                    c()
                }
                i += 1
            }
            budget -= running.count
            running.removeAll(keepingCapacity: true)
            if handlesClosed {
                local.removeAll()
                return
            }
        }
        if !local.isEmpty { wakeIdle() }
    }

    // MARK: lifecycle

    /// Number of libuv handles open besides the loop's own four (for leak checks in tests).
    public func openHandleCount() async -> Int {
        await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
            execute {
                var n = 0
                uv_walk(self.uvLoop, { h, arg in
                    if uv_is_closing(h) == 0 { arg!.assumingMemoryBound(to: Int.self).pointee += 1 }
                }, &n)
                c.resume(returning: n - 4)
            }
        }
    }

    /// Stops the loop: closes every handle still open (reporting how many were not closed by their owners),
    /// joins the thread and closes the libuv loop. Idempotent. Must not be called from the loop thread.
    @discardableResult
    public func shutdown() -> Int {
        precondition(!inLoop, "shutdown() from the loop's own thread would deadlock")
        if stopped.exchange(true, ordering: .acquiringAndReleasing) { return 0 }
        let leaked = Atomic<Int>(0)
        execute {
            var n = 0
            // Handles already closing (closed by their owner, close callback not run yet) are not leaks: on a
            // busy machine the callbacks of handles closed just before shutdown can still be pending here.
            uv_walk(self.uvLoop, { h, arg in
                if uv_is_closing(h) == 0 { arg!.assumingMemoryBound(to: Int.self).pointee += 1 }
            }, &n)
            leaked.store(max(0, n - 4), ordering: .relaxed)
            self.remote.withLock { $0.closed = true }
            self.handlesClosed = true
            uv_walk(self.uvLoop, { h, _ in
                if let h { uvCloseIfOpen(h, nil) }
            }, nil)
        }
        pthread_join(thread, nil)
        // Work that raced with close is dropped: nothing can run it any more.
        let rc = uv_loop_close(uvLoop)
        precondition(rc == 0, "uv_loop_close: \(String(cString: uv_strerror(rc)))")
        asyncHandle.deallocate()
        prepareHandle.deallocate()
        checkHandle.deallocate()
        idleHandle.deallocate()
        return leaked.load(ordering: .relaxed)
    }
}

private let eventLoopAsyncCallback: uv_async_cb = { h in
    Unmanaged<EventLoop>.fromOpaque(h!.pointee.data).takeUnretainedValue().drain()
}
private let eventLoopPrepareCallback: uv_prepare_cb = { h in
    Unmanaged<EventLoop>.fromOpaque(h!.pointee.data).takeUnretainedValue().drain()
}
private let eventLoopCheckCallback: uv_check_cb = { h in
    Unmanaged<EventLoop>.fromOpaque(h!.pointee.data).takeUnretainedValue().drain()
}
private let eventLoopIdleCallback: uv_idle_cb = { h in
    Unmanaged<EventLoop>.fromOpaque(h!.pointee.data).takeUnretainedValue().drain()
}
