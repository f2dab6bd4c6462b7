import WoodpeckerCore

/// Record type byte of the segment format.
public enum SegmentRecordType: UInt8, Sendable {
    case header = 1
    case data = 2
    case index = 3
    case footer = 4
    case blockHeader = 5
}

typealias RecordType = SegmentRecordType

/// The segment header record (block 0): format version, flags, first entry id of the segment.
public struct SegmentHeader: Sendable, Equatable {
    public var version: UInt16
    public var flags: UInt16
    public var firstEntryId: Int64
    public init(version: UInt16, flags: UInt16, firstEntryId: Int64) {
        self.version = version
        self.flags = flags
        self.firstEntryId = firstEntryId
    }
}

/// A block header record as stored: `info.size` is this record plus the data bytes it announces (a header record
/// before it, if any, is not counted here).
public struct BlockHeaderRecord: Sendable, Equatable {
    public var info: BlockInfo
    public var blockLength: UInt32
    public var blockCrc: UInt32
}

/// An index record of a footer: one block and its byte offset in the concatenated log.
public struct IndexRecord: Sendable, Equatable {
    public var info: BlockInfo
    public var offset: Int64
}

/// The footer record at the end of a footer object or a finalized log file.
public struct FooterRecord: Sendable, Equatable {
    public var totalBlocks: Int32
    public var totalRecords: UInt32
    public var totalSize: UInt64
    public var indexOffset: UInt64
    public var indexLength: UInt32
    public var version: UInt16
    public var flags: UInt16
    public var lac: Int64
    public var compacted: Bool { flags & 1 != 0 }
}

/// One decoded record of a log file.
public enum SegmentRecord: Sendable, Equatable {
    case header(SegmentHeader)
    case blockHeader(BlockHeaderRecord)
    case data(SegmentEntry)
    case index(IndexRecord)
    case footer(FooterRecord)
}

/// A record and the byte offset where it starts (relative to the scanned buffer's reader index).
public struct ScannedRecord: Sendable, Equatable {
    public var offset: Int
    public var record: SegmentRecord
}

/// The result of `SegmentCodec.decodeRecords`: every record before the first bad or torn one.
public struct RecordScan: Sendable {
    public var records: [ScannedRecord]
    /// Bytes from the start that hold whole, valid records: where decoding stopped.
    public var validBytes: Int
    /// Why decoding stopped before the end of the input (nil when every byte decoded).
    public var stopReason: String?
}

extension SegmentCodec {
    /// Decodes a concatenation of records (a log file written as a sequence of blocks, maybe with a torn tail)
    /// up to the first record that is truncated, fails its CRC, has an unknown type or a malformed payload.
    /// Never throws: damage ends the scan and is reported in `stopReason`. Record-level only: the caller decides
    /// whether a block whose data records end early counts (see `decodeBlock` for whole-block checks).
    public static func decodeRecords(_ bytes: ByteBuffer) -> RecordScan {
        var records: [ScannedRecord] = []
        var at = bytes.readerIndex
        while at < bytes.writerIndex {
            do {
                let raw = try readRecord(bytes, at: at)
                records.append(ScannedRecord(offset: at - bytes.readerIndex, record: try parse(raw)))
                at = raw.end
            } catch {
                return RecordScan(records: records, validBytes: at - bytes.readerIndex,
                                  stopReason: "offset \(at - bytes.readerIndex): \(error.what)")
            }
        }
        return RecordScan(records: records, validBytes: at - bytes.readerIndex, stopReason: nil)
    }

    // MARK: decoding internals

    static func parse(_ raw: RawRecord) throws(CodecFault) -> SegmentRecord {
        switch RecordType(rawValue: raw.type) {
        case .header: return .header(try parseHeader(raw.payload))
        case .blockHeader: return .blockHeader(try parseBlockHeader(raw.payload))
        case .data: return .data(try parseData(raw.payload))
        case .index: return .index(try parseIndex(raw.payload))
        case .footer: return .footer(try parseFooter(raw.payload))
        case nil: throw CodecFault("unknown record type \(raw.type)")
        }
    }

    /// Reads the frame at absolute index `at`, checking that the payload is present and the CRC matches.
    static func readRecord(_ bytes: ByteBuffer, at: Int) throws(CodecFault) -> RawRecord {
        let available = bytes.writerIndex - at
        guard available >= recordOverhead else {
            throw CodecFault("torn record at byte \(at - bytes.readerIndex): \(available) bytes, a frame needs \(recordOverhead)")
        }
        do {
            let crc = try bytes.getInteger(at: at, endianness: .little, as: UInt32.self)
            let type = try bytes.getInteger(at: at + 4, endianness: .little, as: UInt8.self)
            let length = Int(try bytes.getInteger(at: at + 5, endianness: .little, as: UInt32.self))
            guard length <= available - recordOverhead else {
                throw CodecFault("torn record at byte \(at - bytes.readerIndex): length \(length), only \(available - recordOverhead) bytes follow")
            }
            let covered = try bytes.getSlice(at: at + 4, length: 5 + length)
            let actual = CRC32C.checksum(covered)
            guard actual == crc else {
                throw CodecFault("record CRC mismatch at byte \(at - bytes.readerIndex) (type \(type), length \(length)): stored \(hex(crc)), computed \(hex(actual))")
            }
            return RawRecord(type: type, start: at, payload: try bytes.getSlice(at: at + recordOverhead, length: length))
        } catch let e as DecodeError {
            throw CodecFault("\(e)")  // unreachable after the bounds checks above; kept as a decode error, not a trap
        } catch let fault as CodecFault {
            throw fault
        } catch {
            throw CodecFault("\(error)")
        }
    }

    static func parseHeader(_ payload: ByteBuffer) throws(CodecFault) -> SegmentHeader {
        var r = try PayloadReader(payload, "header", exactly: headerPayload)
        let h = SegmentHeader(version: try r.u16(), flags: try r.u16(), firstEntryId: try r.i64())
        guard try r.bytes(4) == headerMagic else { throw CodecFault("header record has a bad magic") }
        guard h.version == formatVersion else {
            throw CodecFault("unsupported segment format version \(h.version) (this build reads \(formatVersion))")
        }
        return h
    }

    static func parseBlockHeader(_ payload: ByteBuffer) throws(CodecFault) -> BlockHeaderRecord {
        var r = try PayloadReader(payload, "block header", exactly: blockHeaderPayload)
        let number = try r.i32(), first = try r.i64(), last = try r.i64()
        let firstKey = try r.i64(), lastKey = try r.i64(), maxTs = try r.i64()
        let length = try r.u32(), crc = try r.u32()
        guard number >= 0, first >= 0, last >= first, lastKey >= firstKey else {
            throw CodecFault("block header is inconsistent (block \(number), entries \(first)...\(last), keys \(firstKey)...\(lastKey))")
        }
        // Each entry takes at least dataRecordOverhead bytes, so the count is bounded by the length.
        guard (last - first + 1) * Int64(dataRecordOverhead) <= Int64(length) else {
            throw CodecFault("block header claims \(last - first + 1) entries in \(length) bytes")
        }
        let info = BlockInfo(blockNumber: number, firstEntryId: first, lastEntryId: last, firstKey: firstKey,
                             lastKey: lastKey, maxTimestamp: maxTs, size: recordOverhead + blockHeaderPayload + Int(length))
        return BlockHeaderRecord(info: info, blockLength: length, blockCrc: crc)
    }

    static func parseData(_ payload: ByteBuffer) throws(CodecFault) -> SegmentEntry {
        var r = try PayloadReader(payload, "data", atLeast: dataPrefix)
        let key = try r.i64(), ts = try r.i64()
        return SegmentEntry(key: key, timestamp: ts, payload: r.rest())
    }

    static func parseIndex(_ payload: ByteBuffer) throws(CodecFault) -> IndexRecord {
        var r = try PayloadReader(payload, "index", exactly: indexPayload)
        let number = try r.i32(), offset = try r.i64(), size = try r.u32()
        let first = try r.i64(), last = try r.i64(), firstKey = try r.i64(), lastKey = try r.i64(), maxTs = try r.i64()
        guard offset >= 0, size > 0, last >= first, lastKey >= firstKey else {
            throw CodecFault("index record for block \(number) is inconsistent")
        }
        return IndexRecord(info: BlockInfo(blockNumber: number, firstEntryId: first, lastEntryId: last, firstKey: firstKey,
                                           lastKey: lastKey, maxTimestamp: maxTs, size: Int(size)), offset: offset)
    }

    static func parseFooter(_ payload: ByteBuffer) throws(CodecFault) -> FooterRecord {
        var r = try PayloadReader(payload, "footer", exactly: footerPayload)
        let totalBlocks = try r.i32(), totalRecords = try r.u32(), totalSize = try r.u64()
        let indexOffset = try r.u64(), indexLength = try r.u32(), version = try r.u16(), flags = try r.u16()
        guard try r.bytes(4) == footerMagic else { throw CodecFault("footer record has a bad magic") }
        let f = FooterRecord(totalBlocks: totalBlocks, totalRecords: totalRecords, totalSize: totalSize,
                             indexOffset: indexOffset, indexLength: indexLength, version: version, flags: flags,
                             lac: try r.i64())
        guard f.version == formatVersion else {
            throw CodecFault("unsupported segment format version \(f.version) (this build reads \(formatVersion))")
        }
        guard f.totalBlocks >= 0 else { throw CodecFault("negative block count \(f.totalBlocks)") }
        return f
    }

    /// Header record (optional) and block header record at the start of a block object.
    static func decodeBlockPrefix(_ bytes: ByteBuffer) throws(CodecFault) -> (info: BlockInfo, header: SegmentHeader?,
                                                                           blockHeader: BlockHeaderRecord, dataStart: Int) {
        var raw = try readRecord(bytes, at: bytes.readerIndex)
        var header: SegmentHeader? = nil
        if raw.type == RecordType.header.rawValue {
            header = try parseHeader(raw.payload)
            raw = try readRecord(bytes, at: raw.end)
        }
        guard raw.type == RecordType.blockHeader.rawValue else {
            throw CodecFault("expected a block header record at byte \(raw.start - bytes.readerIndex), found type \(raw.type)")
        }
        let bh = try parseBlockHeader(raw.payload)
        if let header, header.firstEntryId != bh.info.firstEntryId {
            throw CodecFault("header says first entry \(header.firstEntryId), block header says \(bh.info.firstEntryId)")
        }
        var info = bh.info
        info.size = raw.end - bytes.readerIndex + Int(bh.blockLength)
        return (info, header, bh, raw.end)
    }

    /// Checks a whole block object: its data length and CRC, then every record (its CRC, a data record, keys not
    /// going backwards), the entry count and the header's key and timestamp bounds. `entry` gets each entry in
    /// order: its key, timestamp, and the absolute index and length of its payload in `bytes`. The one definition
    /// of a valid block, for `decodeBlock` (which keeps the entries) and `verifyBlock` (which only checks); it
    /// reads the records in place, without a slice per record.
    static func scanBlock(_ bytes: ByteBuffer, entry: (_ key: Int64, _ timestamp: Int64, _ payloadAt: Int, _ payloadLength: Int) -> Void)
        throws(CodecFault) -> (info: BlockInfo, header: SegmentHeader?) {
        let prefix = try decodeBlockPrefix(bytes)
        let info = prefix.info
        let dataLength = bytes.writerIndex - prefix.dataStart
        guard dataLength == Int(prefix.blockHeader.blockLength) else {
            throw CodecFault("block \(info.blockNumber) announces \(prefix.blockHeader.blockLength) data bytes, the object has \(dataLength)")
        }
        let dataOffset = prefix.dataStart - bytes.readerIndex
        let blockCrc = prefix.blockHeader.blockCrc
        let base = bytes.readerIndex
        // Offsets in messages are relative to the reader index, as in `readRecord`'s.
        let problem: CodecFault? = bytes.withUnsafeReadableBytes { raw -> CodecFault? in
            // One pass: the block CRC (over the data records, their CRC fields included) is joined from the record
            // CRCs instead of read again. A record problem is reported only after the block CRC was computed over
            // the bytes themselves and matched, so a damaged block is reported as such, as before.
            var running: UInt32 = 0
            let fault = scanRecords(raw, from: dataOffset, base: base, info: info, blockCrc: &running, entry: entry)
            if fault != nil || running != blockCrc {
                let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[dataOffset...]))
                guard crc == blockCrc else {
                    return CodecFault("block \(info.blockNumber) CRC mismatch: stored \(hex(blockCrc)), computed \(hex(crc))")
                }
            }
            return fault
        }
        if let problem { throw problem }
        return (info, prefix.header)
    }

    /// Records at or beyond this length have their CRC joined into the block CRC (`CRC32C.combine`, constant time)
    /// rather than the block CRC run over them a second time.
    static let combineFromBytes = 2048

    /// The block CRC `crc` (of the data records before this one) extended over `record` (CRC field, type, length,
    /// payload), given the record's own CRC (over all of it but the CRC field).
    static func extendBlockCrc(_ crc: UInt32, record: UnsafeRawBufferPointer, recordCrc: UInt32) -> UInt32 {
        let withField = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: record[..<4]), seed: crc)
        let body = UnsafeRawBufferPointer(rebasing: record[4...])
        return body.count >= combineFromBytes ? CRC32C.combine(withField, recordCrc, length: body.count)
                                              : CRC32C.checksum(body, seed: withField)
    }

    /// `scanBlock`'s walk over the data records from `start`: every record CRC, the framing, key order and the
    /// header's bounds; `blockCrc` accumulates the CRC of the bytes walked. `base` turns offsets into `raw` into the
    /// absolute indices `entry` receives.
    private static func scanRecords(_ raw: UnsafeRawBufferPointer, from start: Int, base: Int, info: BlockInfo,
                                    blockCrc: inout UInt32,
                                    entry: (_ key: Int64, _ timestamp: Int64, _ payloadAt: Int, _ payloadLength: Int) -> Void)
        -> CodecFault? {
        let end = raw.count
        var at = start
        var count = 0
        var firstKey = Int64.min, lastKey = Int64.min, maxTimestamp = Int64.min
        while at < end {
            let available = end - at
            guard available >= recordOverhead else {
                return CodecFault("torn record at byte \(at): \(available) bytes, a frame needs \(recordOverhead)")
            }
            let stored = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))
            let type = raw[at + 4]
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 5, as: UInt32.self)))
            guard length <= available - recordOverhead else {
                return CodecFault("torn record at byte \(at): length \(length), only \(available - recordOverhead) bytes follow")
            }
            let record = UnsafeRawBufferPointer(rebasing: raw[at..<(at + recordOverhead + length)])
            let actual = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: record[4...]))
            blockCrc = extendBlockCrc(blockCrc, record: record, recordCrc: actual)
            guard actual == stored else {
                return CodecFault("record CRC mismatch at byte \(at) (type \(type), length \(length)): stored \(hex(stored)), computed \(hex(actual))")
            }
            guard type == RecordType.data.rawValue else {
                return CodecFault("block \(info.blockNumber): expected a data record at byte \(at), found type \(type)")
            }
            guard length >= dataPrefix else {
                return CodecFault("data record payload is \(length) bytes, expected at least \(dataPrefix)")
            }
            let key = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + recordOverhead, as: Int64.self))
            let timestamp = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + recordOverhead + 8, as: Int64.self))
            if count > 0 && key < lastKey {
                return CodecFault("block \(info.blockNumber): keys go backwards (\(lastKey) then \(key))")
            }
            if count == 0 { firstKey = key }
            lastKey = key
            maxTimestamp = max(maxTimestamp, timestamp)
            count += 1
            entry(key, timestamp, base + at + recordOverhead + dataPrefix, length - dataPrefix)
            at += recordOverhead + length
        }
        guard count == info.entryCount else {
            return CodecFault("block \(info.blockNumber) announces \(info.entryCount) entries, holds \(count)")
        }
        guard firstKey == info.firstKey, lastKey == info.lastKey, maxTimestamp == info.maxTimestamp else {
            return CodecFault("block \(info.blockNumber): key or timestamp bounds in the header do not match its entries")
        }
        return nil
    }

    static func decodeBlockOrFault(_ bytes: ByteBuffer) throws(CodecFault) -> DecodedBlock {
        var entries: [SegmentEntry] = []
        var sliceError: DecodeError?
        let (info, header) = try scanBlock(bytes) { key, timestamp, at, length in
            do throws(DecodeError) {
                entries.append(SegmentEntry(key: key, timestamp: timestamp, payload: try bytes.getSlice(at: at, length: length)))
            } catch {
                sliceError = error  // cannot happen: the scan checked the record lies inside `bytes`
            }
        }
        if let sliceError { throw CodecFault("\(sliceError)") }
        return DecodedBlock(info: info, entries: entries, header: header)
    }

    static func decodeFooterOrFault(_ bytes: ByteBuffer) throws(CodecFault) -> SegmentFooter {
        let total = bytes.readableBytes
        guard total >= footerRecordBytes else {
            throw CodecFault("\(total) bytes, a footer needs at least \(footerRecordBytes)")
        }
        let raw = try readRecord(bytes, at: bytes.writerIndex - footerRecordBytes)
        guard raw.type == RecordType.footer.rawValue else {
            throw CodecFault("expected a footer record at the end, found type \(raw.type)")
        }
        let f = try parseFooter(raw.payload)
        let indexLength = total - footerRecordBytes
        guard Int(f.indexLength) == indexLength, indexLength == Int(f.totalBlocks) * indexRecordBytes else {
            throw CodecFault("footer announces \(f.totalBlocks) blocks in \(f.indexLength) index bytes, found \(indexLength) bytes")
        }
        var blocks: [BlockInfo] = []
        blocks.reserveCapacity(Int(f.totalBlocks))
        var offset: Int64 = 0
        var at = bytes.readerIndex
        for i in 0..<Int(f.totalBlocks) {
            let rec = try readRecord(bytes, at: at)
            guard rec.type == RecordType.index.rawValue else {
                throw CodecFault("expected index record \(i), found type \(rec.type)")
            }
            let index = try parseIndex(rec.payload)
            guard index.offset == offset else {
                throw CodecFault("index record \(i) says offset \(index.offset), the blocks before it end at \(offset)")
            }
            offset += Int64(index.info.size)
            blocks.append(index.info)
            at = rec.end
        }
        guard UInt64(offset) == f.totalSize, f.indexOffset == f.totalSize else {
            throw CodecFault("footer total size \(f.totalSize) / index offset \(f.indexOffset) do not match the blocks (\(offset) bytes)")
        }
        return SegmentFooter(blocks: blocks, lac: f.lac, compacted: f.compacted, totalRecords: Int(f.totalRecords))
    }
}

/// Why a decode stopped; becomes the message of a `WoodpeckerError(.corrupted)`.
struct CodecFault: Error {
    let what: String
    init(_ what: String) { self.what = what }
}

extension Error {
    var what: String { (self as? CodecFault)?.what ?? "\(self)" }
}

struct RawRecord {
    let type: UInt8
    let start: Int
    let payload: ByteBuffer
    var end: Int { start + SegmentCodec.recordOverhead + payload.readableBytes }
}

/// Little-endian reads over one record payload; running out is a fault naming the record.
struct PayloadReader {
    var buffer: ByteBuffer
    let name: String

    init(_ payload: ByteBuffer, _ name: String, exactly size: Int) throws(CodecFault) {
        guard payload.readableBytes == size else {
            throw CodecFault("\(name) record payload is \(payload.readableBytes) bytes, expected \(size)")
        }
        buffer = payload
        self.name = name
    }

    init(_ payload: ByteBuffer, _ name: String, atLeast size: Int) throws(CodecFault) {
        guard payload.readableBytes >= size else {
            throw CodecFault("\(name) record payload is \(payload.readableBytes) bytes, expected at least \(size)")
        }
        buffer = payload
        self.name = name
    }

    mutating func int<T: FixedWidthInteger>(_: T.Type) throws(CodecFault) -> T {
        do { return try buffer.readInteger(endianness: .little, as: T.self) } catch {
            throw CodecFault("\(name) record: \(error)")
        }
    }
    mutating func u16() throws(CodecFault) -> UInt16 { try int(UInt16.self) }
    mutating func u32() throws(CodecFault) -> UInt32 { try int(UInt32.self) }
    mutating func u64() throws(CodecFault) -> UInt64 { try int(UInt64.self) }
    mutating func i32() throws(CodecFault) -> Int32 { try int(Int32.self) }
    mutating func i64() throws(CodecFault) -> Int64 { try int(Int64.self) }
    mutating func bytes(_ n: Int) throws(CodecFault) -> [UInt8] {
        do { return try buffer.readBytes(length: n) } catch { throw CodecFault("\(name) record: \(error)") }
    }
    func rest() -> ByteBuffer { buffer }
}

/// Appends framed records to a byte array.
struct RecordWriter {
    var bytes: [UInt8]

    init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Writes the frame around what `payload` appends, then back-fills length and CRC; returns the CRC.
    @discardableResult
    mutating func record(_ type: SegmentRecordType, _ payload: (inout RecordWriter) -> Void) -> UInt32 {
        let start = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 0, type.rawValue, 0, 0, 0, 0])
        payload(&self)
        let length = UInt32(bytes.count - start - SegmentCodec.recordOverhead)
        withUnsafeBytes(of: length.littleEndian) { bytes.replaceSubrange(start + 5..<start + 9, with: $0) }
        let crc = self.crc(start + 4..<bytes.count)
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange(start..<start + 4, with: $0) }
        return crc
    }

    func crc(_ range: Range<Int>) -> UInt32 {
        bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }
}

func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
