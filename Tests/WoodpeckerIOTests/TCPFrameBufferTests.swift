import Testing
import WoodpeckerCore
@testable import WoodpeckerIO

/// Keeps every length-prefixed frame it receives as a slice of the receive buffer (as the LogStore node keeps a
/// block), with the capacity of the storage the slice shares; records the largest capacity seen with no frame done.
final class FrameKeeper: TCPConnectionHandler, @unchecked Sendable {
    struct Kept: Sendable { var frame: ByteBuffer; var storageCapacity: Int }
    let kept = Shared<[Kept]>([])
    let pendingCapacity = Shared(0)
    func connectionRead(_ c: TCPConnection, _ data: inout ByteBuffer) {
        while data.readableBytes >= 4, let length = try? data.getInteger(at: data.readerIndex, as: UInt32.self),
              data.readableBytes >= 4 + Int(length) {
            data.readerIndex += 4
            let frame = try! data.readSlice(length: Int(length))
            kept.with { $0.append(Kept(frame: frame.retainable(), storageCapacity: frame.storageCapacity)) }
        }
        let capacity = data.storageCapacity
        pendingCapacity.with { $0 = max($0, capacity) }
    }
    func connectionClosed(_ c: TCPConnection, error: WoodpeckerError?) {}
}

@Suite(.timeLimit(.minutes(1))) struct TCPFrameBufferTests {
    private func frame(_ payload: [UInt8]) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt32(payload.count))
        b.writeBytes(payload)
        return b
    }

    /// With `lengthPrefixedFrames`, a large frame arrives in a buffer sized for it (not one that doubled while it
    /// filled), so a handler keeps it without a copy; small frames kept as slices are copied by `retainable` and
    /// never pin a large buffer; bytes received later never change a frame already handed out.
    @Test func largeFramesFillABufferSizedForThemAndKeptSlicesStayIntact() async throws {
        let loop = EventLoop(name: "frames")
        let keeper = FrameKeeper()
        var options = TCPServerOptions()
        options.connection.lengthPrefixedFrames = true
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0, options: options) { _ in keeper }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        let sizes = [1_048_576, 300, 3_000_000, 17, 1_048_576, 5_000, 2_500_000]
        let payloads = sizes.enumerated().map { patternBytes($0.element, seed: UInt64($0.offset + 1)) }
        var stream = ByteBuffer()
        for p in payloads { stream.writeBuffer(frame(p)) }
        // Sent in uneven pieces, so frames start and end in the middle of reads.
        var at = 0
        var piece = 7_919
        while at < stream.readableBytes {
            let n = min(piece, stream.readableBytes - at)
            try await conn.send(try stream.getSlice(at: at, length: n))
            at += n
            piece = (piece * 13) % 150_000 + 1
        }
        #expect(await eventually { keeper.kept.value.count == sizes.count })
        let kept = keeper.kept.value
        for (i, k) in kept.enumerated() {
            #expect(k.frame.readableBytesArray == payloads[i], "frame \(i) changed after it was handed out")
            if sizes[i] >= 1_000_000 {
                // The frame, its length prefix, and at most one read past its end.
                #expect(k.storageCapacity <= sizes[i] + 4 + 2 * 64 * 1024,
                        "frame \(i) of \(sizes[i]) bytes arrived in storage of \(k.storageCapacity)")
                #expect(k.frame.storageCapacity == k.storageCapacity, "a large frame is kept without a copy")
            } else {
                #expect(k.frame.storageCapacity < 2 * sizes[i] + 64, "a small frame is copied, not kept with its buffer")
            }
        }
        #expect(await conn.closeAndWait() == nil)
        await server.close()
        #expect(loop.shutdown() == 0)
    }

    /// A peer that announces a large frame and sends little of it gets no more than `frameReserveLimitBytes` (plus
    /// one read) reserved for it.
    @Test func anAnnouncedFrameReservesAtMostTheLimitAhead() async throws {
        let loop = EventLoop(name: "frames-limit")
        let keeper = FrameKeeper()
        var options = TCPServerOptions()
        options.connection.lengthPrefixedFrames = true
        options.connection.frameReserveLimitBytes = 256 * 1024
        let server = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0, options: options) { _ in keeper }
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: server.port)
        var header = ByteBuffer()
        header.writeInteger(UInt32(64 * 1024 * 1024))
        header.writeBytes(patternBytes(1_000, seed: 3))
        try await conn.send(header)
        #expect(await eventually { keeper.pendingCapacity.value > 0 })
        try await Task.sleep(nanoseconds: 50_000_000)
        let capacity = keeper.pendingCapacity.value
        #expect(capacity >= 256 * 1024, "room for the frame was reserved")
        #expect(capacity <= 256 * 1024 + 2 * 64 * 1024 + 1_004, "reserved \(capacity) bytes for 1,004 received")
        #expect(await conn.closeAndWait() == nil)
        await server.close()
        #expect(loop.shutdown() == 0)
    }
}
