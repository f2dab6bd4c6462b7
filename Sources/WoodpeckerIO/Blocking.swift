import CLibUV
import WoodpeckerCore

/// Box carried through uv_queue_work: the work runs on libuv's threadpool, the completion on the loop.
private final class BlockingWork: @unchecked Sendable {
    let work: () -> Void
    let done: () -> Void
    init(work: @escaping () -> Void, done: @escaping () -> Void) {
        self.work = work
        self.done = done
    }
}

extension EventLoop {
    /// Runs blocking work (fsync, file reads, DNS) on libuv's threadpool and resumes the caller from the loop
    /// thread when it is done. The loop thread itself never blocks. Callable from any context.
    public func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
            let result = ResultBox<T>()
            let box = BlockingWork(
                work: { result.value = Result { try work() } },
                done: { c.resume(with: result.value!) })
            executeOrRun {
                let req = UnsafeMutablePointer<uv_work_t>.allocate(capacity: 1)
                req.pointee.data = Unmanaged.passRetained(box).toOpaque()
                let rc = uv_queue_work(self.uvLoop, req, blockingWorkCallback, blockingAfterWorkCallback)
                if rc != 0 {
                    Unmanaged<BlockingWork>.fromOpaque(req.pointee.data).release()
                    req.deallocate()
                    c.resume(throwing: WoodpeckerError(.internalError, "uv_queue_work: \(String(cString: uv_strerror(rc)))"))
                }
            }
        }
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, any Error>?
}

private let blockingWorkCallback: uv_work_cb = { req in
    Unmanaged<BlockingWork>.fromOpaque(req!.pointee.data).takeUnretainedValue().work()
}
private let blockingAfterWorkCallback: uv_after_work_cb = { req, _ in
    let box = Unmanaged<BlockingWork>.fromOpaque(req!.pointee.data).takeRetainedValue()
    req!.deallocate()
    box.done()
}
