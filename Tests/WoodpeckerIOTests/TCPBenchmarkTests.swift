import Testing
import WoodpeckerCore
import WoodpeckerIO

/// Throughput and latency figures of the TCP layer, printed, not asserted (timings vary ±30 % on the shared VM).
/// Correctness is asserted: every byte and every message comes back.
@Suite(.serialized, .timeLimit(.minutes(2))) struct TCPBenchmarkTests {
    struct Result: Sendable {
        var startNs: UInt64 = 0
        var endNs: UInt64 = 0
        var bytes = 0
        var messages = 0
        var done = false
    }

    /// Streams `total` bytes through an echo server with a window of in-flight bytes, both ends callback-driven.
    final class StreamClient: TCPConnectionHandler {
        let total: Int
        let window: Int
        let chunk: ByteBuffer
        let result: Shared<Result>
        var sent = 0
        var received = 0
        init(total: Int, window: Int, chunkSize: Int, result: Shared<Result>) {
            self.total = total
            self.window = window
            chunk = ByteBuffer(bytes: patternBytes(chunkSize, seed: 3))
            self.result = result
        }
        func connectionActive(_ c: TCPConnection) {
            let now = Clock.monotonicNanos()
            result.with { $0.startNs = now }
            pump(c)
        }
        func pump(_ c: TCPConnection) {
            while sent < total && sent - received < window {
                c.write(chunk)
                sent += chunk.readableBytes
            }
        }
        func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
            received += data.readableBytes
            data.readerIndex = data.writerIndex
            if received >= total {
                let now = Clock.monotonicNanos()
                let n = received
                result.with { $0.endNs = now; $0.bytes = n; $0.done = true }
                c.close()
            } else {
                pump(c)
            }
        }
        func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
    }

    /// Sends one `size`-byte message, waits for its echo, repeats `count` times.
    final class PingPongClient: TCPConnectionHandler {
        let count: Int
        let message: ByteBuffer
        let result: Shared<Result>
        var done = 0
        init(count: Int, size: Int, result: Shared<Result>) {
            self.count = count
            message = ByteBuffer(bytes: patternBytes(size, seed: 4))
            self.result = result
        }
        func connectionActive(_ c: TCPConnection) {
            let now = Clock.monotonicNanos()
            result.with { $0.startNs = now }
            c.write(message)
        }
        func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
            let size = message.readableBytes
            while data.readableBytes >= size {
                // Cannot fail: the length was checked.
                let m = try! data.readSlice(length: size)
                precondition(m == message, "ping-pong payload corrupted")
                done += 1
            }
            if done >= count {
                let now = Clock.monotonicNanos()
                let n = done
                result.with { $0.endNs = now; $0.messages = n; $0.done = true }
                c.close()
            } else if data.readableBytes == 0 {
                c.write(message)
            }
        }
        func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
    }

    func run(sameThread: Bool, _ makeHandler: @escaping @Sendable (Shared<Result>) -> any TCPConnectionHandler)
        async throws -> Result
    {
        let serverLoop = EventLoop(name: "bench-s")
        let clientLoop = sameThread ? serverLoop : EventLoop(name: "bench-c")
        let server = try await TCPServer.bind(loop: serverLoop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        let result = Shared(Result())
        let conn = try await TCPClient.connect(loop: clientLoop, host: "127.0.0.1", port: server.port) { _ in
            makeHandler(result)
        }
        #expect(await eventually(timeoutMs: 120_000) { result.value.done })
        _ = await conn.waitClosed()
        await server.close()
        #expect(serverLoop.shutdown() == 0)
        if !sameThread { #expect(clientLoop.shutdown() == 0) }
        return result.value
    }

    @Test func echoThroughputAndPingPong() async throws {
        let total = 256 * 1024 * 1024
        for same in [false, true] {
            let r = try await run(sameThread: same) { StreamClient(total: total, window: 1024 * 1024, chunkSize: 64 * 1024, result: $0) }
            #expect(r.bytes == total)
            let secs = Double(r.endNs - r.startNs) / 1e9
            print("BENCH tcp echo 64KiB chunks, window 1 MiB, \(same ? "client on the server's loop" : "client on its own loop"): \(Int(Double(total) / 1048576 / secs)) MiB/s (each byte crosses loopback twice)")
        }
        let n = 20_000
        for same in [false, true] {
            let r = try await run(sameThread: same) { PingPongClient(count: n, size: 100, result: $0) }
            #expect(r.messages == n)
            let secs = Double(r.endNs - r.startNs) / 1e9
            print("BENCH tcp ping-pong 100 B, \(same ? "client on the server's loop" : "client on its own loop"): \(Int(Double(n) / secs)) msg/s, \(Int(secs * 1e6 / Double(n))) µs per round trip")
        }
    }
}
