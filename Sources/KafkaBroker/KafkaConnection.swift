import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO

/// One client connection: frames requests, hands each to the broker, and writes responses strictly in request
/// order (a request answered early waits in its slot until every earlier one is written). A bad frame (size out of
/// bounds, malformed header) or a request the broker refuses to parse stops reading and closes the connection once
/// every earlier response was written.
///
/// Bounds: a frame larger than `maxRequestBytes` closes the connection; at most
/// `maxInFlightRequestsPerConnection` requests or `maxInFlightBytesPerConnection` request bytes are outstanding before the
/// connection stops reading (backpressure reaches the client through TCP). Loop thread only.
final class KafkaConnection: TCPConnectionHandler, @unchecked Sendable {
    let broker: Broker
    let id: UInt64
    weak var tcp: TCPConnection?
    private var slots: [Slot] = []
    private var slotHead = 0
    private var nextSeq: UInt64 = 0
    private var firstSeq: UInt64 = 0
    private var inFlightBytes = 0
    private var pausedByUs = false
    private var closed = false
    /// Set once a bad frame was seen: nothing more is read; the connection closes after earlier responses.
    private var failing = false
    /// Fulfilled once the latest Produce request has assigned its offsets: the next one waits for it, so that
    /// batches from one connection get offsets in request order (idempotent producers rely on it).
    private var lastProduceAssigned: Promise<Void>?

    private struct Slot {
        var response: ByteBuffer?
        var done = false
        var requestBytes: Int
        /// Close the connection (logging this) when this slot's turn comes, after every earlier response.
        var closeReason: String?
        /// Runs once `response` is written or dropped (see `KafkaResponseOutcome.respond`).
        var onSent: (@Sendable () -> Void)?
    }

    init(broker: Broker, id: UInt64) {
        self.broker = broker
        self.id = id
    }

    func connectionActive(_ connection: TCPConnection) {
        tcp = connection
    }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        tcp = connection
        while !closed && !failing && data.readableBytes >= 4 {
            guard let size = try? data.getInteger(at: data.readerIndex, as: Int32.self) else { return }
            guard size >= 8, Int(size) <= broker.config.maxRequestBytes else {
                return fail(connection, "request frame of \(size) bytes (limit \(broker.config.maxRequestBytes))", &data)
            }
            guard data.readableBytes >= 4 + Int(size) else { break }
            try? data.skip(4)
            guard let frame = try? data.readSlice(length: Int(size)) else { return }
            handleFrame(frame, connection)
        }
        if failing { data.readerIndex = data.writerIndex }
        applyBackpressure(connection)
    }

    private func handleFrame(_ frame: ByteBuffer, _ connection: TCPConnection) {
        var body = frame
        let header: RequestHeader
        do {
            header = try KafkaHeaders.decodeRequestHeader(from: &body)
        } catch {
            var rest = ByteBuffer()
            return fail(connection, "malformed request header: \(error)", &rest)
        }
        let seq = nextSeq
        nextSeq += 1
        slots.append(Slot(requestBytes: frame.readableBytes))
        inFlightBytes += frame.readableBytes
        var request = KafkaRequest(apiKey: header.requestApiKey, version: header.requestApiVersion,
                                   correlationId: header.correlationId, clientId: header.clientId, body: body,
                                   peer: connection.peerAddress)
        if header.requestApiKey == ApiKey.produce.rawValue {
            let assigned = Promise<Void>()
            request.produceOrder = ProduceOrder(after: lastProduceAssigned, assigned: assigned)
            lastProduceAssigned = assigned
        }
        let broker = broker
        Task(executorPreference: broker.loop) {
            let outcome = await broker.handle(request)
            self.complete(seq, outcome)
        }
    }

    private func complete(_ seq: UInt64, _ outcome: KafkaResponseOutcome) {
        broker.loop.preconditionInLoop()
        guard !closed, let connection = tcp else {
            if case let .respond(_, onSent?) = outcome { onSent() }
            return
        }
        let i = slotHead + Int(seq - firstSeq)
        switch outcome {
        case let .respond(frame, onSent):
            slots[i].response = frame
            slots[i].onSent = onSent
        case .noResponse: break
        case let .close(reason): slots[i].closeReason = reason
        }
        slots[i].done = true
        drain(connection)
    }

    /// Writes the completed responses at the head, in request order; closes at a slot that asks for it.
    private func drain(_ connection: TCPConnection) {
        while slotHead < slots.count && slots[slotHead].done {
            if let reason = slots[slotHead].closeReason {
                Diagnostics.warn("closing connection from \(connection.peerAddress): \(reason)")
                return abort(connection)
            }
            if let r = slots[slotHead].response {
                // The slot stays in the array until it is compacted: it must not keep the frame alive.
                slots[slotHead].response = nil
                let onSent = slots[slotHead].onSent
                slots[slotHead].onSent = nil
                connection.write(r, completion: onSent.map { f in { _ in f() } })
            }
            inFlightBytes -= slots[slotHead].requestBytes
            slotHead += 1
            firstSeq += 1
        }
        if slotHead > 256 && slotHead * 2 > slots.count {
            slots.removeFirst(slotHead)
            slotHead = 0
        }
        applyBackpressure(connection)
    }

    private func applyBackpressure(_ connection: TCPConnection) {
        guard !failing, !closed else { return }
        let outstanding = slots.count - slotHead
        let over = outstanding >= broker.config.maxInFlightRequestsPerConnection || inFlightBytes >= broker.config.maxInFlightBytesPerConnection
            || !connection.isWritable
        if over && !pausedByUs {
            pausedByUs = true
            connection.pauseReading()
        } else if !over && pausedByUs {
            pausedByUs = false
            connection.resumeReading()
        }
    }

    func connectionWritabilityChanged(_ connection: TCPConnection, writable: Bool) {
        applyBackpressure(connection)
    }

    /// A frame that cannot be handled: stop reading, answer what came before it, then close.
    private func fail(_ connection: TCPConnection, _ reason: String, _ data: inout ByteBuffer) {
        failing = true
        data.readerIndex = data.writerIndex
        connection.pauseReading()
        nextSeq += 1
        slots.append(Slot(done: true, requestBytes: 0, closeReason: reason))
        drain(connection)
    }

    private func abort(_ connection: TCPConnection) {
        closed = true
        connection.close()
    }

    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        closed = true
        for s in slots[slotHead...] { s.onSent?() }  // responses that will never be written
        slots.removeAll()
        broker.connectionClosed(id)
    }
}

/// A decoded request header and the undecoded body.
struct KafkaRequest: Sendable {
    var apiKey: Int16
    var version: Int16
    var correlationId: Int32
    var clientId: String?
    var body: ByteBuffer
    var peer: String
    var produceOrder: ProduceOrder?
}

/// Orders offset assignment of the Produce requests of one connection.
struct ProduceOrder: Sendable {
    /// The previous Produce request's promise (nil for the first).
    var after: Promise<Void>?
    /// This request's: fulfilled once all of its batches have offsets.
    var assigned: Promise<Void>
}

enum KafkaResponseOutcome: Sendable {
    /// `onSent` runs once the frame has left for the socket or will never be sent (the connection closed), on the
    /// broker loop; it releases what the response holds (a fetch's share of the fetch memory budget).
    case respond(ByteBuffer, onSent: (@Sendable () -> Void)? = nil)
    /// acks=0 produce: the client expects nothing.
    case noResponse
    /// Malformed or unsupported: close this connection only.
    case close(String)
}
