import Testing
import Foundation
import Synchronization
import WoodpeckerCore
@testable import WoodpeckerIO

@Suite(.timeLimit(.minutes(1))) struct TCPTests {
    @Test func echoManyChunksLargePayloadByteExact() async throws {
        let loop = EventLoop(name: "echo")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        #expect(server.port > 0)
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        #expect(conn.peerAddress == "127.0.0.1:\(server.port)")

        let total = 4 * 1024 * 1024 + 123
        let payload = patternBytes(total, seed: 7)
        // Chunks of varying size, sent while the echo is read back concurrently.
        var chunks: [ByteBuffer] = []
        var at = 0
        var size = 1
        while at < total {
            let n = min(size, total - at)
            chunks.append(ByteBuffer(bytes: payload[at..<at + n]))
            at += n
            size = (size * 7 + 13) % 40_000 + 1
        }
        #expect(chunks.count > 100)
        let toSend = chunks
        let sender = Task(executorPreference: loop) {
            for c in toSend { try await conn.send(c) }
        }
        var received: [UInt8] = []
        received.reserveCapacity(total)
        while received.count < total {
            let n = min(64 * 1024, total - received.count)
            let part = try await conn.receive(exactly: n)
            received.append(contentsOf: part.readableBytesArray)
        }
        try await sender.value
        #expect(received == payload)

        #expect(await conn.closeAndWait() == nil)
        await server.close()
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    /// Many small length-prefixed requests written in one loop turn; the server frames them, answers each, and
    /// the answers come back complete and in order.
    @Test func pipelinedSmallMessages() async throws {
        let loop = EventLoop(name: "pipe")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in FramedAckHandler() }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        let count = 2_000
        let answers = try await Task(executorPreference: loop) { () -> [UInt32] in
            for i in 0..<count {
                var b = ByteBuffer()
                b.writeInteger(UInt32(4))
                b.writeInteger(UInt32(i))
                conn.write(b)
            }
            // All 2000 writes were queued in this turn; nothing has left yet.
            #expect(conn.pendingWriteBytes == count * 8)
            let bytes = try await conn.receive(exactly: count * 4)
            // ... and they left in a single uv_write of 2000 buffers.
            #expect(conn.flushCount == 1)
            var r = bytes
            var out: [UInt32] = []
            for _ in 0..<count { out.append(try r.readInteger(as: UInt32.self) ) }
            return out
        }.value
        #expect(answers == (0..<count).map { UInt32($0) * 3 })
        #expect(await conn.onLoop { $0.pendingWriteBytes } == 0)
        await server.close()
        #expect(await conn.waitClosed() == nil)
        #expect(loop.shutdown() == 0)
    }

    /// A reader that does not read: the producer's pendingWriteBytes crosses the high watermark, writability goes
    /// false, and once the client drains, true again; every byte arrives intact.
    @Test func backpressureWatermarks() async throws {
        let serverLoop = EventLoop(name: "bp-s")
        let clientLoop = EventLoop(name: "bp-c")
        let total = 32 * 1024 * 1024
        let probe = Shared(ProducerProbe())
        var opts = TCPServerOptions()
        opts.connection.writeHighWatermarkBytes = 256 * 1024
        opts.connection.writeLowWatermarkBytes = 64 * 1024
        let server = try await TCPServer.bind(loop: serverLoop, host: "127.0.0.1", port: 0, options: opts) { _ in
            ProducerHandler(total: total, chunk: 32 * 1024, probe: probe)
        }
        let conn = try await TCPClient.connect(loop: clientLoop, host: "127.0.0.1", port: server.port) { _ in
            TCPInboxHandler(maxBufferedBytes: 64 * 1024)
        }
        // Do not read for a while: the client inbox fills, pauses reading, kernel buffers fill, producer stalls.
        // (Kernel socket buffers absorb several MiB first, so writability may flap before the producer stalls.)
        var stalled = probe.value
        let deadline = nowMs() + 10_000
        while nowMs() < deadline {
            try await Task.sleep(nanoseconds: 50_000_000)
            let now = probe.value
            if now.events.last == false && now.produced == stalled.produced { break }
            stalled = now
        }
        stalled = probe.value
        #expect(stalled.events.last == false)
        #expect(stalled.maxPending > 256 * 1024)
        #expect(stalled.produced < total)
        #expect(await conn.onLoop { $0.isReadingPaused })

        // Drain.
        var received = 0
        var ok = true
        while received < total {
            let n = min(32 * 1024, total - received)
            let part = try await conn.receive(exactly: n)
            ok = ok && part.readableBytesArray == expectedProducerBytes(from: received, count: n)
            received += n
        }
        #expect(ok)
        let done = probe.value
        #expect(done.produced == total)
        #expect(done.events.first == false && done.events.contains(true))
        await server.close()
        #expect(await conn.waitClosed() == nil)
        #expect(serverLoop.shutdown() == 0)
        #expect(clientLoop.shutdown() == 0)
    }

    @Test func pauseReadingStopsDelivery() async throws {
        let loop = EventLoop(name: "pause")
        let probe = Shared(PauseProbe())
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { c in
            PausingHandler(probe: probe)
        }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        try await conn.send(ByteBuffer(bytes: [1, 2, 3]))
        #expect(await eventually { probe.value.bytes == 3 })
        let serverSide = try #require(probe.value.connection)
        #expect(await serverSide.onLoop { $0.isReadingPaused })
        try await conn.send(ByteBuffer(bytes: [4, 5, 6, 7]))
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(probe.value.bytes == 3)
        #expect(probe.value.reads == 1)
        await serverSide.onLoop { $0.resumeReading() }
        #expect(await eventually { probe.value.bytes == 7 })
        await server.close()
        #expect(await conn.waitClosed() == nil)
        #expect(loop.shutdown() == 0)
    }

    @Test func idleTimeoutClosesWithReason() async throws {
        let loop = EventLoop(name: "idle")
        var opts = TCPServerOptions()
        opts.connection.idleTimeoutMs = 600
        let probe = Shared<WoodpeckerError?>(nil)
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0, options: opts) { _ in
            CloseRecorder(probe: probe)
        }
        let start = nowMs()
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        // Activity postpones the timeout: six sends 150 ms apart keep it open past 600 ms (with room for a loaded
        // machine's late wake-ups; 100 ms gaps against 300 ms failed once beside parallel suites).
        for _ in 0..<6 {
            try await Task.sleep(nanoseconds: 150_000_000)
            try await conn.send(ByteBuffer(bytes: [1]))
        }
        #expect(await conn.waitClosed() == nil)  // the client sees an orderly end of stream
        let elapsed = nowMs() - start
        #expect(elapsed >= 1_400)
        #expect(await eventually { probe.value != nil })
        let e = try #require(probe.value)
        #expect(e.code == .timeout)
        #expect(e.message.contains("idle"))
        await server.close()
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    @Test func serverCloseClosesEverythingNoHandleLeft() async throws {
        let loop = EventLoop(name: "shut")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        var conns: [TCPConnection] = []
        for i in 0..<5 {
            let c = try await TCPClient.connect(loop: loop, host: "localhost", port: server.port)
            try await c.send(ByteBuffer(bytes: [UInt8(i)]))
            #expect(try await c.receive(exactly: 1).readableBytesArray == [UInt8(i)])
            conns.append(c)
        }
        #expect(await loop.openHandleCount() == 11)  // listener + 5 accepted + 5 client sockets
        await server.close()
        for c in conns { #expect(await c.waitClosed() == nil) }
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    /// Work that reaches the loop after `shutdown` closed every handle must not close a handle again: a
    /// connection aborted by a job queued behind the shutdown hit libuv's `uv_close` assertion (QuorumTests
    /// aborted the test process this way when a client's task ran after its loop was shut down).
    @Test func workQueuedBehindShutdownDoesNotCloseHandlesAgain() async throws {
        let loop = EventLoop(name: "late")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        let release = Atomic<Bool>(false)
        // Holds the loop thread so that the shutdown closure and the late abort are drained in one batch.
        loop.execute { while !release.load(ordering: .acquiring) { sched_yield() } }
        let shutdown = Thread { _ = loop.shutdown() }
        shutdown.start()
        try await Task.sleep(nanoseconds: 100_000_000)  // the shutdown closure is queued by now
        loop.execute { conn.abort() }
        release.store(true, ordering: .releasing)
        while !shutdown.isFinished { try await Task.sleep(nanoseconds: 5_000_000) }
        #expect(loop.shutdown() == 0, "a second shutdown is a no-op")
        _ = server
    }

    /// A graceful close waits in `uv_shutdown` while the peer reads nothing. When the loop shuts down then, libuv
    /// closes the socket and calls the pending shutdown request back with ECANCELED from inside its close;
    /// that callback closed the handle a second time and aborted in `uv_close` (CI, session 7).
    @Test func loopShutdownWithAGracefulCloseStillPendingDoesNotCloseTwice() async throws {
        let serverLoop = EventLoop(name: "sink")
        let probe = Shared(PauseProbe())
        let server = try await TCPServer.bind(loop: serverLoop, host: "127.0.0.1", port: 0) { _ in
            PausingHandler(probe: probe)
        }
        let loop = EventLoop(name: "pending-shutdown")
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        let queued = Shared(0)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.execute {
                // Far more than the socket buffers hold, so the write (and the shutdown behind it) stays pending.
                conn.write(ByteBuffer(bytes: [UInt8](repeating: 7, count: 64 << 20)))
                conn.close()
                queued.with { $0 = conn.pendingWriteBytes }
                c.resume()
            }
        }
        #expect(queued.value > 0, "the write must still be pending when the loop shuts down")
        _ = loop.shutdown()
        await server.close()
        #expect(serverLoop.shutdown() == 0)
    }

    /// The same for a connect still in progress: its callback comes back with ECANCELED during the loop's
    /// shutdown and must not close the socket again.
    @Test func loopShutdownWithAConnectStillPendingDoesNotCloseTwice() async throws {
        let loop = EventLoop(name: "pending-connect")
        // A listener whose backlog is full leaves further connects pending (SYNs are dropped, not refused).
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(listen(listener, 0) == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            getsockname(listener, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let attempts = 8
        let finished = Shared(0)
        for _ in 0..<attempts {
            Task {
                _ = try? await TCPClient.connect(loop: loop, host: "127.0.0.1", port: port, connectTimeoutMs: 0)
                finished.with { $0 += 1 }
            }
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        // The backlog takes one or two; the rest stay pending.
        #expect(finished.value < attempts)
        _ = loop.shutdown()
        close(listener)
    }

    @Test func connectToClosedPortFailsClearly() async throws {
        let loop = EventLoop(name: "refused")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        let port = server.port
        await server.close()
        do {
            _ = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: port)
            Issue.record("connect to a closed port succeeded")
        } catch let e as WoodpeckerError {
            #expect(e.code == .ioFailure)
            #expect(e.isRetryable)
            #expect(e.message.contains("127.0.0.1:\(port)"))
            #expect(e.message.contains("ECONNREFUSED"))
        }
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    @Test func bindingABusyPortFails() async throws {
        let loop = EventLoop(name: "busy")
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        await #expect(throws: WoodpeckerError.self) {
            _ = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: server.port) { _ in EchoHandler() }
        }
        await server.close()
        #expect(loop.shutdown() == 0)
    }

    @Test func writesAfterCloseFailAndUnreadBoundCloses() async throws {
        let loop = EventLoop(name: "bounds")
        var opts = TCPServerOptions()
        opts.connection.maxUnreadBytes = 1000
        let probe = Shared<WoodpeckerError?>(nil)
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0, options: opts) { _ in
            CloseRecorder(probe: probe)  // never consumes
        }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        try await conn.send(ByteBuffer(bytes: patternBytes(5000, seed: 1)))
        _ = await conn.waitClosed()
        #expect(await eventually { probe.value != nil })
        #expect(probe.value?.code == .bufferFull)
        await #expect(throws: WoodpeckerError.self) { try await conn.send(ByteBuffer(bytes: [1])) }
        await server.close()
        #expect(loop.shutdown() == 0)
    }
}

// MARK: handlers used above

/// Frames [u32 length][u32 value] requests and answers each with value*3.
final class FramedAckHandler: TCPConnectionHandler {
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
        var out = ByteBuffer()
        while data.readableBytes >= 4 {
            let len = Int(try! data.getInteger(at: data.readerIndex, as: UInt32.self))
            guard data.readableBytes >= 4 + len else { break }
            try! data.skip(4)
            let v = try! data.readInteger(as: UInt32.self)
            out.writeInteger(v * 3)
        }
        if out.readableBytes > 0 { c.write(out) }
    }
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
}

struct ProducerProbe: Sendable {
    var events: [Bool] = []
    var produced = 0
    var maxPending = 0
}

/// Byte i of the produced stream is producerPattern[i % producerPeriod] (a prime period, so chunk boundaries
/// never line up with it). Precomputed because per-byte loops are slow in debug builds.
let producerPeriod = 65_521
let producerPattern: [UInt8] = {
    let one = patternBytes(producerPeriod, seed: 99)
    return one + one
}()

func expectedProducerBytes(from: Int, count: Int) -> [UInt8] {
    precondition(count <= producerPeriod)
    let s = from % producerPeriod
    return Array(producerPattern[s..<s + count])
}

/// Writes `total` bytes as fast as writability allows.
final class ProducerHandler: TCPConnectionHandler {
    let total: Int
    let chunk: Int
    let probe: Shared<ProducerProbe>
    var produced = 0
    init(total: Int, chunk: Int, probe: Shared<ProducerProbe>) {
        self.total = total
        self.chunk = chunk
        self.probe = probe
    }
    func connectionActive(_ c: TCPConnection) { produce(c) }
    func produce(_ c: TCPConnection) {
        while c.isWritable && produced < total {
            let n = min(chunk, total - produced)
            c.write(ByteBuffer(bytes: expectedProducerBytes(from: produced, count: n)))
            produced += n
            let p = c.pendingWriteBytes
            let done = produced
            probe.with { $0.maxPending = max($0.maxPending, p); $0.produced = done }
        }
    }
    func connectionWritabilityChanged(_ c: TCPConnection, writable: Bool) {
        probe.with { $0.events.append(writable) }
        if writable { produce(c) }
    }
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) { data.readerIndex = data.writerIndex }
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
}

struct PauseProbe: Sendable {
    var bytes = 0
    var reads = 0
    var connection: TCPConnection?
}

/// Pauses reading after the first read.
final class PausingHandler: TCPConnectionHandler {
    let probe: Shared<PauseProbe>
    init(probe: Shared<PauseProbe>) { self.probe = probe }
    func connectionActive(_ c: TCPConnection) { probe.with { $0.connection = c } }
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
        let n = data.readableBytes
        data.readerIndex = data.writerIndex
        probe.with { $0.bytes += n; $0.reads += 1 }
        c.pauseReading()
    }
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
}

/// Records the close error; never consumes input.
final class CloseRecorder: TCPConnectionHandler {
    let probe: Shared<WoodpeckerError?>
    init(probe: Shared<WoodpeckerError?>) { self.probe = probe }
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {}
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) { probe.with { $0 = error } }
}

@Suite(.timeLimit(.minutes(1))) struct TCPBoundsTests {
    @Test func connectionsBeyondMaxAreRejected() async throws {
        let loop = EventLoop(name: "maxconn")
        var opts = TCPServerOptions()
        opts.maxConnections = 1
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0, options: opts) { _ in EchoHandler() }
        let first = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        try await first.send(ByteBuffer(bytes: [9]))
        #expect(try await first.receive(exactly: 1).readableBytesArray == [9])
        let second = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        _ = await second.waitClosed()  // closed by the server at once
        let counts = await first.onLoop { _ in (server.connectionCount, server.rejectedConnections) }
        #expect(counts.0 == 1 && counts.1 == 1)
        await server.close()
        _ = await first.waitClosed()
        #expect(loop.shutdown() == 0)
    }

    /// An orderly close toward a peer that never reads gives up after closeTimeoutMs and says why.
    @Test func orderlyCloseIsBoundedByCloseTimeout() async throws {
        let serverLoop = EventLoop(name: "ct-s")
        let clientLoop = EventLoop(name: "ct-c")
        var opts = TCPServerOptions()
        opts.connection.closeTimeoutMs = 200
        opts.connection.maxPendingWriteBytes = 1 << 30
        let closeError = Shared<WoodpeckerError?>(nil)
        let serverConn = Shared<TCPConnection?>(nil)
        let server = try await TCPServer.bind(loop: serverLoop, host: "127.0.0.1", port: 0, options: opts) { c in
            serverConn.with { $0 = c }
            return CloseRecorder(probe: closeError)
        }
        let client = try await TCPClient.connect(loop: clientLoop, host: "127.0.0.1", port: server.port) { _ in
            TCPInboxHandler(maxBufferedBytes: 16 * 1024)  // pauses almost at once
        }
        #expect(await eventually { serverConn.value != nil })
        let sc = try #require(serverConn.value)
        // Queue far more than the kernel buffers can take, then close in order.
        let chunk = ByteBuffer(bytes: patternBytes(1024 * 1024, seed: 2))
        let start = nowMs()
        await sc.onLoop { c in
            for _ in 0..<64 { c.write(chunk) }
            c.close()
        }
        let e = await sc.waitClosed()
        #expect(e?.code == .timeout)
        #expect(e?.message.contains("did not drain") == true)
        #expect(nowMs() - start >= 190)
        // The client stopped reading, so it cannot notice the peer's close: close it ourselves.
        _ = await client.closeAndWait()
        await server.close()
        #expect(serverLoop.shutdown() == 0)
        #expect(clientLoop.shutdown() == 0)
    }
}
