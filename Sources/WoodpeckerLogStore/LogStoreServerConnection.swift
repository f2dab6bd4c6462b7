import WoodpeckerCore
import WoodpeckerIO

/// One client connection of a `LogStoreNode`: frames requests, runs each on the node (concurrently; responses go
/// out as they complete, matched by request id), and answers bad input without harming the node:
/// - another protocol version: an `.unsupportedVersion` error response, the connection stays open;
/// - an unknown opcode or malformed body: an `.invalidArgument` error response;
/// - a frame length out of bounds: the connection is closed (the stream cannot be resynchronised).
/// At most `maxInFlightBytes` request bytes are processed at once; beyond that it stops reading (TCP pushes back).
/// Loop thread only.
final class LogStoreServerConnection: TCPConnectionHandler, @unchecked Sendable {
    let node: LogStoreNode
    let maxFrameBytes: Int
    let maxInFlightBytes: Int
    private var inFlightBytes = 0
    private var pausedByUs = false
    private var closed = false

    init(node: LogStoreNode, maxFrameBytes: Int, maxInFlightBytes: Int) {
        self.node = node
        self.maxFrameBytes = maxFrameBytes
        self.maxInFlightBytes = maxInFlightBytes
    }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        while !closed && !pausedByUs {
            let frame: LogStoreFrame
            do {
                guard let f = try LogStoreWire.nextFrame(&data, maxFrameBytes: maxFrameBytes) else { break }
                frame = f
            } catch {
                Diagnostics.warn("logstore: closing connection from \(connection.peerAddress): \(error)")
                data.readerIndex = data.writerIndex
                closed = true
                connection.abort(error: error)
                return
            }
            handle(frame, connection)
        }
    }

    private func handle(_ frame: LogStoreFrame, _ connection: TCPConnection) {
        let request: LogStoreRequest
        do {
            request = try LogStoreWire.decodeRequest(frame)
        } catch {
            connection.write(LogStoreWire.encodeResponse(opcode: frame.opcode, requestId: frame.requestId, .failure(error)))
            return
        }
        let size = frame.body.readableBytes
        inFlightBytes += size
        applyBackpressure(connection)
        let node = node
        Task(executorPreference: node.loop) {
            let result = await node.execute(request)
            self.inFlightBytes -= size
            if !self.closed && !connection.isClosing {
                connection.write(LogStoreWire.encodeResponse(opcode: frame.opcode, requestId: frame.requestId, result))
            }
            self.applyBackpressure(connection)
        }
    }

    private func applyBackpressure(_ connection: TCPConnection) {
        guard !closed else { return }
        let over = inFlightBytes >= maxInFlightBytes
        if over && !pausedByUs {
            pausedByUs = true
            connection.pauseReading()
        } else if !over && pausedByUs {
            pausedByUs = false
            connection.resumeReading()
        }
    }

    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        closed = true
    }
}
