import WoodpeckerCore

/// A bound on units (bytes, slots) held by many tasks at once, confined to one loop: the broker's fetch memory, a
/// client's concurrent compactions. A holder reserves what it may need before it starts; while others hold the
/// budget it waits, in arrival order, for at most its own deadline. A reservation larger than the whole budget is
/// let through once nothing else is held, so a single oversized request still makes progress.
public final class LoopBudget: @unchecked Sendable {
    public let limit: Int
    private let loop: EventLoop
    public private(set) var used = 0
    /// The most units reserved at once (for tests and diagnostics).
    public private(set) var peak = 0
    private var waiters: [Waiter] = []
    private var nextId: UInt64 = 0

    private struct Waiter {
        var id: UInt64
        var bytes: Int
        var continuation: CheckedContinuation<Bool, Never>
    }

    public init(limit: Int, loop: EventLoop) {
        self.limit = max(1, limit)
        self.loop = loop
    }

    private func fits(_ bytes: Int) -> Bool { used == 0 || used + bytes <= limit }

    /// Reserves `bytes`; false if they could not be had within `timeoutMs` (nothing is then reserved). Without a
    /// timeout it waits until they are granted (for holders whose own work is bounded).
    public func reserve(_ bytes: Int, timeoutMs: UInt64?) async -> Bool {
        loop.preconditionInLoop()
        if waiters.isEmpty && fits(bytes) {
            take(bytes)
            return true
        }
        nextId += 1
        let id = nextId
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            waiters.append(Waiter(id: id, bytes: bytes, continuation: c))
            guard let timeoutMs else { return }
            loop.schedule(afterMs: timeoutMs) { [self] in
                loop.preconditionInLoop()
                guard let i = waiters.firstIndex(where: { $0.id == id }) else { return }
                waiters.remove(at: i).continuation.resume(returning: false)
                grantWaiting()  // the head may have been the one blocking the others
            }
        }
    }

    /// Returns bytes reserved earlier and lets waiting reservations in, in arrival order.
    public func release(_ bytes: Int) {
        loop.preconditionInLoop()
        used -= bytes
        grantWaiting()
    }

    private func grantWaiting() {
        while let first = waiters.first, fits(first.bytes) {
            waiters.removeFirst()
            take(first.bytes)
            first.continuation.resume(returning: true)
        }
    }

    private func take(_ bytes: Int) {
        used += bytes
        peak = max(peak, used)
    }
}
