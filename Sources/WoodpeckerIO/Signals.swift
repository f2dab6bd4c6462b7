import CLibUV

/// Runs a handler on the loop thread when the process receives a signal (e.g. SIGTERM for a clean shutdown).
public final class SignalWatcher: @unchecked Sendable {
    let handle: UnsafeMutablePointer<uv_signal_t>
    let handler: @Sendable (Int32) -> Void
    let loop: EventLoop

    /// Starts watching `signals`. Create and close it on any thread; the handler runs on the loop.
    public init(loop: EventLoop, signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) async {
        self.loop = loop
        self.handler = handler
        handle = .allocate(capacity: signals.count)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.executeOrRun {
                let me = Unmanaged.passUnretained(self).toOpaque()
                for (i, s) in signals.enumerated() {
                    uv_signal_init(loop.uvLoop, self.handle + i)
                    (self.handle + i).pointee.data = me
                    uv_signal_start(self.handle + i, signalWatcherCallback, s)
                    uv_unref(UnsafeMutableRawPointer(self.handle + i).assumingMemoryBound(to: uv_handle_t.self))
                }
                c.resume()
            }
        }
        count = signals.count
    }

    private var count = 0

    /// Stops watching (on the loop).
    public func close() async {
        let n = count
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.executeOrRun {
                for i in 0..<n {
                    let h = UnsafeMutableRawPointer(self.handle + i).assumingMemoryBound(to: uv_handle_t.self)
                    uvCloseIfOpen(h, nil)
                }
                c.resume()
            }
        }
    }
}

private let signalWatcherCallback: uv_signal_cb = { h, signum in
    Unmanaged<SignalWatcher>.fromOpaque(h!.pointee.data).takeUnretainedValue().handler(signum)
}
