import Synchronization
import WoodpeckerCore
import WoodpeckerIO

/// Thread-safe state shared between loop-thread handlers and the test body.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ v: T) { m = Mutex(v) }
    func with<R>(_ body: (inout T) -> R) -> R { m.withLock { body(&$0) } }
    var value: T { m.withLock { $0 } }
}

/// Echoes every byte back.
final class EchoHandler: TCPConnectionHandler {
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
        c.write(data)
        data.readerIndex = data.writerIndex
    }
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
}

/// Deterministic pseudo-random bytes.
func patternBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8]()
    out.reserveCapacity(count)
    for _ in 0..<count {
        x = x &* 6364136223846793005 &+ 1442695040888963407
        out.append(UInt8(truncatingIfNeeded: x >> 33))
    }
    return out
}

func nowMs() -> UInt64 { Clock.monotonicMillis() }

/// Polls `cond` every 5 ms for at most `timeoutMs`.
func eventually(timeoutMs: UInt64 = 5_000, _ cond: () -> Bool) async -> Bool {
    let deadline = nowMs() + timeoutMs
    while nowMs() < deadline {
        if cond() { return true }
        try? await Task.sleep(nanoseconds: 5_000_000)
    }
    return cond()
}
