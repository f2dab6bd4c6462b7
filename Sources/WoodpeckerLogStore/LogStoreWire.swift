import WoodpeckerCore

/// The operations of the LogStore RPC protocol (the `u16 opcode` of a frame). A response carries its request's
/// opcode and request id.
public enum LogStoreOpcode: UInt16, Sendable, CaseIterable {
    case append = 1
    case updateConfirmed = 2
    case fence = 3
    case status = 4
    case readBlock = 5
    case complete = 6
    case health = 7
}

/// One decoded request.
public enum LogStoreRequest: Sendable, Equatable {
    /// `durableThrough`: blocks 0...n another node of the ensemble reported durable in object storage (-1: none
    /// known); the node drops its copies of them without looking them up. `uploader`: the writer chose this node
    /// to upload the segment's blocks (it puts them without looking first; the others look first).
    case append(SegmentRef, block: Int32, bytes: ByteBuffer, confirmedThrough: Int32, durableThrough: Int32, uploader: Bool)
    case updateConfirmed(SegmentRef, through: Int32, durableThrough: Int32, uploader: Bool)
    case fence(SegmentRef)
    case status(SegmentRef)
    case readBlock(SegmentRef, number: Int32)
    case complete(SegmentRef, lastBlock: Int32)
    case health

    public var opcode: LogStoreOpcode {
        switch self {
        case .append: .append
        case .updateConfirmed: .updateConfirmed
        case .fence: .fence
        case .status: .status
        case .readBlock: .readBlock
        case .complete: .complete
        case .health: .health
        }
    }
}

/// The result of a successful request: `.uploaded` for append and updateConfirmed (the node's `uploadedThrough`
/// after the request: blocks 0...n of the segment are durable in object storage); `.done` for complete;
/// `.status` for fence and status; `.block` for readBlock; `.health` for health.
public enum LogStoreResult: Sendable, Equatable {
    case done
    case uploaded(through: Int32)
    case status(SegmentStatus)
    case block(ByteBuffer?)
    case health(NodeHealth)
}

/// One complete frame, header decoded, body not yet interpreted.
public struct LogStoreFrame: Sendable, Equatable {
    public var version: UInt16
    /// Raw opcode: an unknown value is reported by `LogStoreWire.decodeRequest`, not by the framer.
    public var opcode: UInt16
    public var requestId: UInt64
    public var body: ByteBuffer

    public init(version: UInt16, opcode: UInt16, requestId: UInt64, body: ByteBuffer) {
        self.version = version
        self.opcode = opcode
        self.requestId = requestId
        self.body = body
    }
}

/// The LogStore wire format: a sans-I/O, versioned, length-framed binary codec. Pure functions over bytes; every
/// decoder is safe on untrusted input (throws `WoodpeckerError`, never traps).
///
/// Frame (integers big-endian): `u32 length (bytes after this field) | u16 protocolVersion | u16 opcode |
/// u64 requestId | body`. A response body starts with `u16 status` (0 = ok, else the `WoodpeckerError.Code` raw
/// value) `| string message | u8 retryable`, followed, when the status is 0, by the op's result.
/// `string` = `u32 length | UTF-8`, `bytes` = `u32 length | bytes`, `SegmentRef` = `string objectPrefix |
/// i64 logId | i64 segmentId`, `optional bytes` = `u8 present | [bytes]`.
public enum LogStoreWire {
    /// 2: append and updateConfirmed carry the durable point and answer with the node's uploaded point.
    public static let protocolVersion: UInt16 = 2
    /// Bytes of the frame header after the length field.
    public static let headerBytes = 12
    /// Largest string (object prefix, error message) a frame may carry.
    public static let maxStringBytes = 64 * 1024

    // MARK: framing

    /// Takes one complete frame off the front of `buffer`, or returns nil (leaving `buffer` as is) when its bytes
    /// have not all arrived yet. Throws `.invalidArgument` for a length below the header size and `.bufferFull`
    /// for a length above `maxFrameBytes`: the stream cannot be resynchronised, so the caller closes it.
    public static func nextFrame(_ buffer: inout ByteBuffer, maxFrameBytes: Int = Limits.maxRequestSizeBytes)
        throws(WoodpeckerError) -> LogStoreFrame?
    {
        guard buffer.readableBytes >= 4, let length = try? buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)
        else { return nil }
        guard Int(length) >= headerBytes else {
            throw WoodpeckerError(.invalidArgument, "LogStore frame length \(length) is shorter than its \(headerBytes)-byte header")
        }
        guard Int(length) <= maxFrameBytes else {
            throw WoodpeckerError(.bufferFull, "LogStore frame of \(length) bytes exceeds the limit of \(maxFrameBytes)")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        do {
            try buffer.skip(4)
            let version = try buffer.readInteger(as: UInt16.self)
            let opcode = try buffer.readInteger(as: UInt16.self)
            let requestId = try buffer.readInteger(as: UInt64.self)
            let body = try buffer.readSlice(length: Int(length) - headerBytes)
            return LogStoreFrame(version: version, opcode: opcode, requestId: requestId, body: body)
        } catch {
            // Unreachable: the length was checked above; reported rather than trapped.
            throw WoodpeckerError(.internalError, "LogStore frame: \(error)")
        }
    }

    /// Writes a frame around the body `fill` writes.
    static func frame(opcode: UInt16, requestId: UInt64, version: UInt16 = protocolVersion,
                      capacity: Int = 64, _ fill: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var out = ByteBuffer(capacity: 4 + headerBytes + capacity)
        let at = out.reserveBytes(4)
        out.writeInteger(version)
        out.writeInteger(opcode)
        out.writeInteger(requestId)
        fill(&out)
        out.setInteger(UInt32(out.writerIndex - at - 4), at: at)
        return out
    }

    // MARK: requests

    /// A complete request frame.
    public static func encodeRequest(_ request: LogStoreRequest, requestId: UInt64) -> ByteBuffer {
        var parts = encodeRequestParts(request, requestId: requestId)
        var frame = parts.removeFirst()
        frame.reserveCapacity(parts.reduce(0) { $0 + $1.readableBytes })
        for p in parts { frame.writeBuffer(p) }
        return frame
    }

    /// A complete request frame in parts to be sent back to back: an append's block bytes (its last field) are a
    /// part of their own, sent as they are (one buffer shared by every replica's request, never copied).
    public static func encodeRequestParts(_ request: LogStoreRequest, requestId: UInt64) -> [ByteBuffer] {
        var trailing: ByteBuffer?
        var head = frame(opcode: request.opcode.rawValue, requestId: requestId, capacity: 64) { out in
            switch request {
            case let .append(ref, n, bytes, confirmed, durable, uploader):
                writeRef(ref, &out)
                out.writeInteger(n)
                out.writeInteger(confirmed)
                out.writeInteger(durable)
                out.writeInteger(UInt8(uploader ? 1 : 0))
                out.writeInteger(UInt32(bytes.readableBytes))
                trailing = bytes
            case let .updateConfirmed(ref, through, durable, uploader):
                writeRef(ref, &out)
                out.writeInteger(through)
                out.writeInteger(durable)
                out.writeInteger(UInt8(uploader ? 1 : 0))
            case let .fence(ref), let .status(ref):
                writeRef(ref, &out)
            case let .readBlock(ref, n):
                writeRef(ref, &out)
                out.writeInteger(n)
            case let .complete(ref, last):
                writeRef(ref, &out)
                out.writeInteger(last)
            case .health:
                break
            }
        }
        guard let trailing else { return [head] }
        head.setInteger(UInt32(head.readableBytes - 4 + trailing.readableBytes), at: head.readerIndex)
        return [head, trailing]
    }

    /// Decodes a request frame's body. Throws `.unsupportedVersion` for another protocol version and
    /// `.invalidArgument` for an unknown opcode or a malformed body (short, trailing bytes, bad string).
    public static func decodeRequest(_ frame: LogStoreFrame) throws(WoodpeckerError) -> LogStoreRequest {
        guard frame.version == protocolVersion else {
            throw WoodpeckerError(.unsupportedVersion,
                                  "LogStore protocol version \(frame.version) is not supported (this node speaks \(protocolVersion)); upgrade the older side")
        }
        guard let op = LogStoreOpcode(rawValue: frame.opcode) else {
            throw WoodpeckerError(.invalidArgument, "unknown LogStore opcode \(frame.opcode)")
        }
        var b = frame.body
        do {
            let request: LogStoreRequest
            switch op {
            case .append:
                let ref = try readRef(&b)
                let n = try b.readInteger(as: Int32.self)
                let confirmed = try b.readInteger(as: Int32.self)
                let durable = try b.readInteger(as: Int32.self)
                let uploader = try readFlag(&b)
                request = .append(ref, block: n, bytes: try readBytes(&b), confirmedThrough: confirmed, durableThrough: durable,
                                  uploader: uploader)
            case .updateConfirmed:
                let ref = try readRef(&b)
                let through = try b.readInteger(as: Int32.self)
                let durable = try b.readInteger(as: Int32.self)
                request = .updateConfirmed(ref, through: through, durableThrough: durable, uploader: try readFlag(&b))
            case .fence:
                request = .fence(try readRef(&b))
            case .status:
                request = .status(try readRef(&b))
            case .readBlock:
                request = .readBlock(try readRef(&b), number: try b.readInteger(as: Int32.self))
            case .complete:
                request = .complete(try readRef(&b), lastBlock: try b.readInteger(as: Int32.self))
            case .health:
                request = .health
            }
            guard b.readableBytes == 0 else { throw DecodeError.malformed("\(b.readableBytes) trailing bytes") }
            return request
        } catch {
            throw WoodpeckerError(.invalidArgument, "malformed LogStore \(op) request \(frame.requestId): \(error)")
        }
    }

    // MARK: responses

    /// A complete response frame for request `requestId` of operation `opcode`.
    public static func encodeResponse(opcode: UInt16, requestId: UInt64, _ result: Result<LogStoreResult, WoodpeckerError>)
        -> ByteBuffer
    {
        var capacity = 64
        if case let .success(.block(b?)) = result { capacity += b.readableBytes }
        return frame(opcode: opcode, requestId: requestId, capacity: capacity) { out in
            switch result {
            case let .failure(e):
                out.writeInteger(UInt16(truncatingIfNeeded: e.code.rawValue))
                writeString(e.message, &out)
                out.writeInteger(UInt8(e.isRetryable ? 1 : 0))
            case let .success(r):
                out.writeInteger(UInt16(0))
                writeString("", &out)
                out.writeInteger(UInt8(0))
                writeResult(r, &out)
            }
        }
    }

    /// Decodes a response frame: the node's error, or the result of the op named by the frame's opcode.
    /// Throws (rather than returning a failure) when the frame itself is malformed: `.unsupportedVersion` or
    /// `.corrupted`.
    public static func decodeResponse(_ frame: LogStoreFrame) throws(WoodpeckerError) -> Result<LogStoreResult, WoodpeckerError> {
        guard frame.version == protocolVersion else {
            throw WoodpeckerError(.unsupportedVersion, "LogStore response in protocol version \(frame.version); this client speaks \(protocolVersion)")
        }
        guard let op = LogStoreOpcode(rawValue: frame.opcode) else {
            throw WoodpeckerError(.corrupted, "LogStore response with unknown opcode \(frame.opcode)")
        }
        var b = frame.body
        do {
            let status = try b.readInteger(as: UInt16.self)
            let message = try readString(&b)
            let retryable = try b.readInteger(as: UInt8.self)
            guard retryable <= 1 else { throw DecodeError.malformed("retryable flag \(retryable)") }
            if status != 0 {
                guard b.readableBytes == 0 else { throw DecodeError.malformed("\(b.readableBytes) trailing bytes") }
                let code = WoodpeckerError.Code(rawValue: Int(status)) ?? .internalError
                let text = code == .internalError && Int(status) != code.rawValue ? "node error \(status): \(message)" : message
                return .failure(WoodpeckerError(code, text, retryable: retryable == 1))
            }
            let result: LogStoreResult
            switch op {
            case .append, .updateConfirmed: result = .uploaded(through: try b.readInteger(as: Int32.self))
            case .complete: result = .done
            case .fence, .status: result = .status(try readStatus(&b))
            case .readBlock:
                let present = try b.readInteger(as: UInt8.self)
                guard present <= 1 else { throw DecodeError.malformed("presence flag \(present)") }
                result = .block(present == 1 ? try readBytes(&b) : nil)
            case .health: result = .health(try readHealth(&b))
            }
            guard b.readableBytes == 0 else { throw DecodeError.malformed("\(b.readableBytes) trailing bytes") }
            return .success(result)
        } catch {
            throw WoodpeckerError(.corrupted, "malformed LogStore \(op) response \(frame.requestId): \(error)")
        }
    }

    private static func writeResult(_ r: LogStoreResult, _ out: inout ByteBuffer) {
        switch r {
        case .done: break
        case let .uploaded(n): out.writeInteger(n)
        case let .status(s):
            out.writeInteger(UInt8(s.known ? 1 : 0))
            out.writeInteger(UInt8(s.fenced ? 1 : 0))
            out.writeInteger(s.uploadedThrough)
            out.writeInteger(s.confirmedThrough)
            out.writeInteger(UInt32(s.blocks.count))
            for h in s.blocks {
                out.writeInteger(h.blockNumber)
                out.writeInteger(h.firstEntryId)
                out.writeInteger(h.lastEntryId)
                out.writeInteger(UInt32(truncatingIfNeeded: h.size))
            }
        case let .block(b):
            if let b {
                out.writeInteger(UInt8(1))
                writeBytes(b, &out)
            } else {
                out.writeInteger(UInt8(0))
            }
        case let .health(h):
            out.writeInteger(h.incarnation)
            out.writeInteger(Int64(h.bufferedBytes))
            out.writeInteger(Int64(h.maxBufferedBytes))
            out.writeInteger(Int64(h.segments))
            out.writeInteger(h.uploadedBlocks)
            out.writeInteger(UInt8(h.hasDataDirectory ? 1 : 0))
        }
    }

    private static func readStatus(_ b: inout ByteBuffer) throws(DecodeError) -> SegmentStatus {
        let known = try readFlag(&b)
        let fenced = try readFlag(&b)
        let uploaded = try b.readInteger(as: Int32.self)
        let confirmed = try b.readInteger(as: Int32.self)
        let count = Int(try b.readInteger(as: UInt32.self))
        // Each block takes 24 bytes: a count the body cannot hold is rejected before allocating.
        guard count * 24 <= b.readableBytes else { throw DecodeError.malformed("\(count) blocks in \(b.readableBytes) bytes") }
        var blocks: [HeldBlock] = []
        blocks.reserveCapacity(count)
        for _ in 0..<count {
            let n = try b.readInteger(as: Int32.self)
            let first = try b.readInteger(as: Int64.self)
            let last = try b.readInteger(as: Int64.self)
            let size = Int(try b.readInteger(as: UInt32.self))
            blocks.append(HeldBlock(blockNumber: n, firstEntryId: first, lastEntryId: last, size: size))
        }
        return SegmentStatus(known: known, fenced: fenced, blocks: blocks, uploadedThrough: uploaded, confirmedThrough: confirmed)
    }

    private static func readHealth(_ b: inout ByteBuffer) throws(DecodeError) -> NodeHealth {
        let incarnation = try b.readInteger(as: UInt64.self)
        let buffered = try b.readInteger(as: Int64.self)
        let maxBuffered = try b.readInteger(as: Int64.self)
        let segments = try b.readInteger(as: Int64.self)
        let uploaded = try b.readInteger(as: Int64.self)
        let hasDir = try readFlag(&b)
        guard buffered >= 0, maxBuffered >= 0, segments >= 0 else { throw DecodeError.malformed("negative health counter") }
        return NodeHealth(incarnation: incarnation, bufferedBytes: Int(buffered), maxBufferedBytes: Int(maxBuffered),
                          segments: Int(segments), uploadedBlocks: uploaded, hasDataDirectory: hasDir)
    }

    // MARK: primitives

    private static func readFlag(_ b: inout ByteBuffer) throws(DecodeError) -> Bool {
        let v = try b.readInteger(as: UInt8.self)
        guard v <= 1 else { throw DecodeError.malformed("flag value \(v)") }
        return v == 1
    }

    static func writeString(_ s: String, _ out: inout ByteBuffer) {
        var utf8 = Array(s.utf8)
        if utf8.count > maxStringBytes { utf8 = Array(utf8.prefix(maxStringBytes)) }
        out.writeInteger(UInt32(utf8.count))
        out.writeBytes(utf8)
    }

    static func readString(_ b: inout ByteBuffer) throws(DecodeError) -> String {
        let n = Int(try b.readInteger(as: UInt32.self))
        guard n <= maxStringBytes else { throw DecodeError.malformed("string of \(n) bytes") }
        return try b.readString(length: n)
    }

    static func writeBytes(_ bytes: ByteBuffer, _ out: inout ByteBuffer) {
        out.writeInteger(UInt32(bytes.readableBytes))
        out.writeBuffer(bytes)
    }

    static func readBytes(_ b: inout ByteBuffer) throws(DecodeError) -> ByteBuffer {
        let n = Int(try b.readInteger(as: UInt32.self))
        return try b.readSlice(length: n)
    }

    static func writeRef(_ ref: SegmentRef, _ out: inout ByteBuffer) {
        precondition(ref.objectPrefix.utf8.count <= maxStringBytes, "object prefix longer than \(maxStringBytes) bytes")
        writeString(ref.objectPrefix, &out)
        out.writeInteger(ref.logId)
        out.writeInteger(ref.segmentId)
    }

    static func readRef(_ b: inout ByteBuffer) throws(DecodeError) -> SegmentRef {
        let prefix = try readString(&b)
        let logId = try b.readInteger(as: Int64.self)
        let segmentId = try b.readInteger(as: Int64.self)
        return SegmentRef(objectPrefix: prefix, logId: logId, segmentId: segmentId)
    }
}
