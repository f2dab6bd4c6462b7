import CLibUV
import WoodpeckerCore

/// A libuv timer owned by loop-thread code. Create, restart and cancel it on the loop thread only.
///
/// An armed timer keeps itself alive until it fires (or is stopped or closed): libuv holds only a raw pointer to
/// it, and an owner that drops its last reference while the timer is armed (an abandoned writer, say) must not
/// leave libuv calling into freed memory. A timer released while idle closes its handle on the loop.
public final class LoopTimer: @unchecked Sendable {
    let handle: UnsafeMutablePointer<uv_timer_t>
    let loop: EventLoop
    var callback: () -> Void
    private var closed = false
    /// The reference libuv's pointer stands for while the timer is armed.
    private var armed: Unmanaged<LoopTimer>?

    /// Creates an idle timer. `callback` runs on the loop thread each time the timer fires.
    public init(loop: EventLoop, _ callback: @escaping () -> Void) {
        loop.preconditionInLoop()
        self.loop = loop
        self.callback = callback
        handle = .allocate(capacity: 1)
        uv_timer_init(loop.uvLoop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// (Re)starts the timer: first fire after `afterMs`, then every `repeatMs` if non-zero.
    public func start(afterMs: UInt64, repeatMs: UInt64 = 0) {
        precondition(!closed)
        // The loop's cached "now" can be stale by the length of the current iteration; refresh it so the timer
        // fires `afterMs` from this call, not from the start of the iteration.
        uv_update_time(loop.uvLoop)
        uv_timer_start(handle, loopTimerCallback, afterMs, repeatMs)
        if armed == nil { armed = Unmanaged.passRetained(self) }
    }

    public func stop() {
        if !closed { uv_timer_stop(handle) }
        disarm()
    }

    /// Drops the self-reference once libuv no longer holds the timer (the last line a caller may run on it).
    fileprivate func disarm() {
        guard let a = armed, closed || !isActive else { return }
        armed = nil
        a.release()
    }

    deinit {
        // Only an idle timer gets here (an armed one holds itself): close its handle on the loop thread.
        guard !closed else { return }
        let h = UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)
        let raw = UInt(bitPattern: h)
        loop.executeOrRun {
            let h = UnsafeMutablePointer<uv_handle_t>(bitPattern: raw)!
            uvCloseIfOpen(h) { $0?.deallocate() }
        }
    }

    public var isActive: Bool { !closed && uv_is_active(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) != 0 }

    /// Stops and releases the timer. The object must not be started again.
    public func close() {
        guard !closed else { return }
        closed = true
        uv_timer_stop(handle)
        uvCloseIfOpen(handle) { $0?.deallocate() }
        disarm()
    }
}

private let loopTimerCallback: uv_timer_cb = { h in
    let t = Unmanaged<LoopTimer>.fromOpaque(h!.pointee.data).takeUnretainedValue()
    t.callback()
    t.disarm()  // a one-shot timer that was not restarted by its callback lets go of itself
}

extension EventLoop {
    /// Runs `body` once on the loop thread after `ms` milliseconds. Safe from any thread.
    public func schedule(afterMs ms: UInt64, _ body: @escaping @Sendable () -> Void) {
        executeOrRun {
            var timer: LoopTimer?
            timer = LoopTimer(loop: self) {
                timer?.close()
                timer = nil
                body()
            }
            timer!.start(afterMs: ms)
        }
    }

    /// Suspends the calling task for `ms` milliseconds using a loop timer (no pool thread involved when the task
    /// prefers this loop).
    public func sleep(ms: UInt64) async {
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            schedule(afterMs: ms) { c.resume() }
        }
    }
}
