import WoodpeckerCore

/// Why a record batch was rejected. `kafkaErrorCode` is what a Produce response should carry.
public struct RecordBatchError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Fewer bytes than the header or `batchLength` announce.
        case truncated
        /// `batchLength` is impossible (smaller than the header) or disagrees with the bytes given.
        case badLength
        /// The stored CRC-32C does not match the bytes.
        case crcMismatch
        /// Magic byte is not 2 (old MessageSet formats are not accepted).
        case unsupportedMagic
        /// recordsCount / lastOffsetDelta / record offset deltas disagree, or a record does not parse.
        case invalidRecords
        /// Compression codec bits hold an undefined value (5-7).
        case unknownCodec
        /// Decompression failed (corrupt payload or output above the bound).
        case compression(CompressionError.Kind)
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// CORRUPT_MESSAGE for damaged bytes (length, CRC, undecodable payload), INVALID_RECORD for well-formed
    /// bytes with inconsistent content, MESSAGE_TOO_LARGE when decompression exceeded its bound.
    public var kafkaErrorCode: KafkaErrorCode {
        switch kind {
        case .truncated, .badLength, .crcMismatch, .unknownCodec, .compression(.corrupt), .compression(.failed):
            .corruptMessage
        case .unsupportedMagic, .invalidRecords: .invalidRecord
        case .compression(.tooLarge): .messageTooLarge
        }
    }

    public var description: String { "record batch rejected (\(kafkaErrorCode.name)): \(message)" }
}

/// The fixed 61-byte header of a magic-2 record batch.
public struct RecordBatchHeader: Sendable, Equatable {
    public static let size = 61
    /// Offset of the CRC-covered region (attributes through the end of the batch).
    public static let crcStart = 21
    /// Bytes before `batchLength`'s region (baseOffset + batchLength).
    public static let logOverhead = 12

    public var baseOffset: Int64
    public var batchLength: Int32
    public var partitionLeaderEpoch: Int32
    public var magic: Int8
    public var crc: UInt32
    public var attributes: Int16
    public var lastOffsetDelta: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var producerId: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    public var recordsCount: Int32

    /// Parses the header at the reader index of `buffer` without moving it.
    public init(parsing buffer: ByteBuffer) throws(RecordBatchError) {
        guard buffer.readableBytes >= Self.size else {
            throw RecordBatchError(.truncated, "batch header needs \(Self.size) bytes, \(buffer.readableBytes) available")
        }
        do {
            let at = buffer.readerIndex
            baseOffset = try buffer.getInteger(at: at, as: Int64.self)
            batchLength = try buffer.getInteger(at: at + 8, as: Int32.self)
            partitionLeaderEpoch = try buffer.getInteger(at: at + 12, as: Int32.self)
            magic = try buffer.getInteger(at: at + 16, as: Int8.self)
            crc = try buffer.getInteger(at: at + 17, as: UInt32.self)
            attributes = try buffer.getInteger(at: at + 21, as: Int16.self)
            lastOffsetDelta = try buffer.getInteger(at: at + 23, as: Int32.self)
            baseTimestamp = try buffer.getInteger(at: at + 27, as: Int64.self)
            maxTimestamp = try buffer.getInteger(at: at + 35, as: Int64.self)
            producerId = try buffer.getInteger(at: at + 43, as: Int64.self)
            producerEpoch = try buffer.getInteger(at: at + 51, as: Int16.self)
            baseSequence = try buffer.getInteger(at: at + 53, as: Int32.self)
            recordsCount = try buffer.getInteger(at: at + 57, as: Int32.self)
        } catch {
            throw RecordBatchError(.truncated, "batch header: \(error)")
        }
    }

    /// Compression codec from attributes bits 0-2; nil for the undefined values 5-7.
    public var compression: CompressionCodec? { CompressionCodec(rawValue: attributes & 0x07) }
    /// Attributes bit 3: timestamps are log-append time (set by the broker).
    public var isLogAppendTime: Bool { attributes & 0x08 != 0 }
    public var isTransactional: Bool { attributes & 0x10 != 0 }
    public var isControl: Bool { attributes & 0x20 != 0 }
    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    public var lastOffset: Int64 { baseOffset + Int64(lastOffsetDelta) }
    /// Total size of the batch in bytes, header included.
    public var totalSize: Int { Self.logOverhead + Int(batchLength) }
}

/// A header of one record (key is UTF-8 on the wire; kept as a String).
public struct RecordHeader: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// One record inside a batch. Offsets and timestamps are deltas against the batch's base values.
public struct Record: Sendable, Equatable {
    public var attributes: Int8
    public var timestampDelta: Int64
    public var offsetDelta: Int32
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]

    public init(offsetDelta: Int32, timestampDelta: Int64 = 0, key: [UInt8]? = nil, value: [UInt8]?,
                headers: [RecordHeader] = [], attributes: Int8 = 0) {
        self.attributes = attributes
        self.timestampDelta = timestampDelta
        self.offsetDelta = offsetDelta
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// Appends the record with its varint length prefix.
    func encode(to out: inout ByteBuffer) {
        var body = ByteBuffer()
        body.writeInteger(attributes)
        body.writeVarint(timestampDelta)
        body.writeVarint(Int64(offsetDelta))
        Self.writeVarBytes(key, to: &body)
        Self.writeVarBytes(value, to: &body)
        body.writeVarint(Int64(headers.count))
        for h in headers {
            let k = Array(h.key.utf8)
            body.writeVarint(Int64(k.count))
            body.writeBytes(k)
            Self.writeVarBytes(h.value, to: &body)
        }
        out.writeVarint(Int64(body.readableBytes))
        out.writeBuffer(body)
    }

    static func writeVarBytes(_ b: [UInt8]?, to out: inout ByteBuffer) {
        guard let b else {
            out.writeVarint(-1)
            return
        }
        out.writeVarint(Int64(b.count))
        out.writeBytes(b)
    }

    /// Reads one length-prefixed record; the record must consume exactly its announced length.
    static func decode(from buffer: inout ByteBuffer) throws(DecodeError) -> Record {
        try read(from: &buffer, materialize: true).record!
    }

    /// Reads one record. With `materialize` false the framing is checked just as strictly, but key, value and
    /// headers are skipped, not copied, and only the offset delta is returned (what a broker validating a produced
    /// batch needs).
    static func read(from buffer: inout ByteBuffer, materialize: Bool) throws(DecodeError)
        -> (offsetDelta: Int32, record: Record?)
    {
        let length = try buffer.readVarint()
        guard length >= 0, length <= Int64(buffer.readableBytes) else {
            throw .malformed("record length \(length) with \(buffer.readableBytes) bytes left")
        }
        var b = try buffer.readSlice(length: Int(length))
        let attributes = try b.readInteger(as: Int8.self)
        let timestampDelta = try b.readVarint()
        let offsetDelta = try b.readVarint()
        guard let od = Int32(exactly: offsetDelta) else { throw .malformed("offset delta \(offsetDelta) out of range") }
        let key = try readVarBytes(&b, what: "key", materialize: materialize)
        let value = try readVarBytes(&b, what: "value", materialize: materialize)
        let headerCount = try b.readVarint()
        guard headerCount >= 0, headerCount <= Int64(b.readableBytes) else {
            throw .malformed("header count \(headerCount) with \(b.readableBytes) bytes left")
        }
        var headers: [RecordHeader] = []
        if materialize { headers.reserveCapacity(Int(headerCount)) }
        for _ in 0..<headerCount {
            let klen = try b.readVarint()
            guard klen >= 0, klen <= Int64(b.readableBytes) else { throw .malformed("header key length \(klen)") }
            if materialize {
                let k = try b.readString(length: Int(klen))
                headers.append(RecordHeader(key: k, value: try readVarBytes(&b, what: "header value", materialize: true)))
            } else {
                try b.skip(Int(klen))
                _ = try readVarBytes(&b, what: "header value", materialize: false)
            }
        }
        guard b.readableBytes == 0 else { throw .malformed("record has \(b.readableBytes) trailing bytes") }
        guard materialize else { return (od, nil) }
        return (od, Record(offsetDelta: od, timestampDelta: timestampDelta, key: key, value: value, headers: headers,
                           attributes: attributes))
    }

    /// Reads (or, with `materialize` false, skips) a varint-length byte string; nil for length -1.
    static func readVarBytes(_ b: inout ByteBuffer, what: String, materialize: Bool = true) throws(DecodeError) -> [UInt8]? {
        let n = try b.readVarint()
        if n == -1 { return nil }
        guard n >= 0, n <= Int64(b.readableBytes) else { throw .malformed("\(what) length \(n) with \(b.readableBytes) bytes left") }
        guard materialize else {
            try b.skip(Int(n))
            return nil
        }
        return try b.readBytes(length: Int(n))
    }
}

/// One magic-2 record batch: the parsed header plus the batch's bytes (header included).
///
/// Records stay opaque unless asked for: offsets and CRC work on the clear header. Rewrites (`setBaseOffset`,
/// `setPartitionLeaderEpoch`, `setLogAppendTime`) edit `bytes` in place and keep the CRC valid.
public struct RecordBatch: Sendable, Equatable {
    public private(set) var header: RecordBatchHeader
    /// The whole batch (`header.totalSize` bytes).
    public private(set) var bytes: ByteBuffer

    /// Wraps exactly one batch (`bytes` must hold `12 + batchLength` bytes). Does not check the CRC.
    public init(bytes: ByteBuffer) throws(RecordBatchError) {
        let h = try RecordBatchHeader(parsing: bytes)
        guard Int(h.batchLength) >= RecordBatchHeader.size - RecordBatchHeader.logOverhead else {
            throw RecordBatchError(.badLength, "batchLength \(h.batchLength) is smaller than the batch header")
        }
        guard h.totalSize == bytes.readableBytes else {
            throw RecordBatchError(.badLength, "batchLength \(h.batchLength) announces \(h.totalSize) bytes, got \(bytes.readableBytes)")
        }
        header = h
        self.bytes = bytes
    }

    /// Splits the `records` field of a Produce request (or a fetched log range) into batches.
    /// Every byte must belong to a complete batch; a partial trailing batch is `.truncated`.
    public static func split(_ records: ByteBuffer) throws(RecordBatchError) -> [RecordBatch] {
        var rest = records
        var out: [RecordBatch] = []
        while rest.readableBytes > 0 {
            guard rest.readableBytes >= RecordBatchHeader.logOverhead + 5 else {
                throw RecordBatchError(.truncated, "\(rest.readableBytes) trailing bytes are not a batch")
            }
            let length = (try? rest.getInteger(at: rest.readerIndex + 8, as: Int32.self)) ?? -1
            let magic = (try? rest.getInteger(at: rest.readerIndex + 16, as: Int8.self)) ?? -1
            guard magic == 2 else {
                throw RecordBatchError(.unsupportedMagic, "magic \(magic) at batch \(out.count); only magic 2 is accepted")
            }
            guard length >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead) else {
                throw RecordBatchError(.badLength, "batchLength \(length) is smaller than the batch header")
            }
            let total = RecordBatchHeader.logOverhead + Int(length)
            guard total <= rest.readableBytes else {
                throw RecordBatchError(.truncated, "batch \(out.count) announces \(total) bytes, \(rest.readableBytes) left")
            }
            // Bounds were checked above, so the slice cannot fail.
            guard let slice = try? rest.readSlice(length: total) else {
                throw RecordBatchError(.truncated, "batch \(out.count) is truncated")
            }
            out.append(try RecordBatch(bytes: slice))
        }
        return out
    }

    /// The CRC-32C of bytes [21, end) as it should be stored.
    public func computeCRC() -> UInt32 {
        let start = bytes.readerIndex + RecordBatchHeader.crcStart
        let region = (try? bytes.getSlice(at: start, length: bytes.readableBytes - RecordBatchHeader.crcStart)) ?? ByteBuffer()
        return CRC32C.checksum(region)
    }

    /// Checks a batch as the broker receives it from a producer: magic 2, length, CRC-32C,
    /// `recordsCount > 0` and `lastOffsetDelta == recordsCount - 1`. For uncompressed batches it also parses every
    /// record and checks the count and that offset deltas run 0, 1, ... in order.
    public func validate() throws(RecordBatchError) {
        guard header.magic == 2 else {
            throw RecordBatchError(.unsupportedMagic, "magic \(header.magic); only magic 2 is accepted")
        }
        let crc = computeCRC()
        guard crc == header.crc else {
            throw RecordBatchError(.crcMismatch, "CRC-32C is \(hex(crc)) but the batch says \(hex(header.crc))")
        }
        guard let codec = header.compression else {
            throw RecordBatchError(.unknownCodec, "compression bits \(header.attributes & 7) name no codec")
        }
        guard header.recordsCount > 0, Int64(header.lastOffsetDelta) == Int64(header.recordsCount) - 1 else {
            throw RecordBatchError(.invalidRecords,
                                   "inconsistent batch offset range: recordsCount \(header.recordsCount), lastOffsetDelta \(header.lastOffsetDelta)")
        }
        if codec == .none {
            // Every record's framing and offset delta, without copying keys and values out.
            try walkRecords(materialize: false, maxDecompressedBytes: 0) { i, offsetDelta, _ throws(RecordBatchError) in
                if offsetDelta != Int32(i) {
                    throw RecordBatchError(.invalidRecords, "record \(i) has offset delta \(offsetDelta)")
                }
            }
        }
    }

    /// The record payload (after the 61-byte header), compressed if the batch is.
    public var payload: ByteBuffer {
        (try? bytes.getSlice(at: bytes.readerIndex + RecordBatchHeader.size,
                             length: bytes.readableBytes - RecordBatchHeader.size)) ?? ByteBuffer()
    }

    /// Decodes every record, decompressing first when needed. The count must equal `recordsCount`.
    public func records(maxDecompressedBytes: Int = KafkaCompression.defaultMaxDecompressedBytes)
        throws(RecordBatchError) -> [Record]
    {
        var out: [Record] = []
        out.reserveCapacity(max(0, min(Int(header.recordsCount), 1 << 16)))
        try walkRecords(materialize: true, maxDecompressedBytes: maxDecompressedBytes) { _, _, r throws(RecordBatchError) in
            out.append(r!)
        }
        return out
    }

    /// Reads the records in order (decompressing first when needed), checking that exactly `recordsCount` of them
    /// fill the payload, and hands each one's index and offset delta (and, when materialized, the record) to `visit`.
    private func walkRecords(materialize: Bool, maxDecompressedBytes: Int,
                             _ visit: (Int, Int32, Record?) throws(RecordBatchError) -> Void) throws(RecordBatchError)
    {
        guard let codec = header.compression else {
            throw RecordBatchError(.unknownCodec, "compression bits \(header.attributes & 7) name no codec")
        }
        var data: ByteBuffer
        if codec == .none {
            data = payload
        } else {
            do {
                data = ByteBuffer(bytes: try KafkaCompression.decompress(payload, codec: codec, maxOutputBytes: maxDecompressedBytes))
            } catch {
                throw RecordBatchError(.compression(error.kind), "\(error)")
            }
        }
        let count = Int(header.recordsCount)
        // Each record takes at least 7 bytes; a larger count cannot be honest.
        guard count >= 0, count <= data.readableBytes / 7 + 1 else {
            throw RecordBatchError(.invalidRecords, "recordsCount \(count) cannot fit in \(data.readableBytes) bytes")
        }
        for i in 0..<count {
            let r: (offsetDelta: Int32, record: Record?)
            do {
                r = try Record.read(from: &data, materialize: materialize)
            } catch {
                throw RecordBatchError(.invalidRecords, "record \(i) of \(count): \(error)")
            }
            try visit(i, r.offsetDelta, r.record)
        }
        guard data.readableBytes == 0 else {
            throw RecordBatchError(.invalidRecords, "\(data.readableBytes) bytes after the last of \(count) records")
        }
    }

    // MARK: rewrites

    /// Sets baseOffset (outside the CRC: no recompute).
    public mutating func setBaseOffset(_ offset: Int64) {
        bytes.setInteger(offset, at: bytes.readerIndex)
        header.baseOffset = offset
    }

    /// Sets partitionLeaderEpoch (outside the CRC: no recompute).
    public mutating func setPartitionLeaderEpoch(_ epoch: Int32) {
        bytes.setInteger(epoch, at: bytes.readerIndex + 12)
        header.partitionLeaderEpoch = epoch
    }

    /// Marks timestamps as log-append time (attributes bit 3), sets maxTimestamp and recomputes the CRC.
    /// baseTimestamp keeps the create time, as Kafka does.
    public mutating func setLogAppendTime(_ timestampMs: Int64) {
        let attrs = header.attributes | 0x08
        bytes.setInteger(attrs, at: bytes.readerIndex + 21)
        bytes.setInteger(timestampMs, at: bytes.readerIndex + 35)
        header.attributes = attrs
        header.maxTimestamp = timestampMs
        let crc = computeCRC()
        bytes.setInteger(crc, at: bytes.readerIndex + 17)
        header.crc = crc
    }

    // MARK: building

    /// Builds a batch from records (for tests and the native load generator). `lastOffsetDelta` is the largest
    /// offset delta, `maxTimestamp` the base timestamp plus the largest timestamp delta.
    public static func build(records: [Record], baseOffset: Int64 = 0, baseTimestamp: Int64,
                             compression: CompressionCodec = .none, producerId: Int64 = -1, producerEpoch: Int16 = -1,
                             baseSequence: Int32 = -1, partitionLeaderEpoch: Int32 = -1,
                             isTransactional: Bool = false) throws(CompressionError) -> RecordBatch
    {
        var payload = ByteBuffer()
        for r in records { r.encode(to: &payload) }
        let body = try KafkaCompression.compress(payload.readableBytesArray, codec: compression)
        var attributes = compression.rawValue
        if isTransactional { attributes |= 0x10 }
        let lastOffsetDelta = records.map(\.offsetDelta).max() ?? 0
        let maxTimestamp = baseTimestamp + (records.map(\.timestampDelta).max() ?? 0)

        var b = ByteBuffer(capacity: RecordBatchHeader.size + body.count)
        b.writeInteger(baseOffset)
        b.writeInteger(Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead + body.count))
        b.writeInteger(partitionLeaderEpoch)
        b.writeInteger(Int8(2))
        let crcAt = b.reserveBytes(4)
        b.writeInteger(attributes)
        b.writeInteger(lastOffsetDelta)
        b.writeInteger(baseTimestamp)
        b.writeInteger(maxTimestamp)
        b.writeInteger(producerId)
        b.writeInteger(producerEpoch)
        b.writeInteger(baseSequence)
        b.writeInteger(Int32(records.count))
        b.writeBytes(body)
        let crc = (try? b.getSlice(at: RecordBatchHeader.crcStart, length: b.readableBytes - RecordBatchHeader.crcStart))
            .map { CRC32C.checksum($0) } ?? 0
        b.setInteger(crc, at: crcAt)
        // The bytes were just laid out with a matching length, so parsing cannot fail.
        guard let batch = try? RecordBatch(bytes: b) else { preconditionFailure("built an unparseable record batch") }
        return batch
    }
}

private func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
