import WoodpeckerCore

/// One WAL entry as stored in a segment: a monotonic key (the Kafka facade uses the batch's last offset), a
/// timestamp (the batch's max timestamp) and opaque bytes. The entry id is not stored; it is implied by position
/// (block `firstEntryId` + ordinal).
public struct SegmentEntry: Sendable, Equatable {
    public var key: Int64
    public var timestamp: Int64
    public var payload: ByteBuffer
    public init(key: Int64, timestamp: Int64, payload: ByteBuffer) {
        self.key = key
        self.timestamp = timestamp
        self.payload = payload
    }
}

/// What the block header (and the footer's index record) says about one block. Entry ids are contiguous within a
/// block and keys are non-decreasing, so `firstKey`/`lastKey` bound every key in it.
public struct BlockInfo: Sendable, Equatable {
    public var blockNumber: Int32
    public var firstEntryId: Int64
    public var lastEntryId: Int64
    public var firstKey: Int64
    public var lastKey: Int64
    public var maxTimestamp: Int64
    /// Encoded bytes of the whole block object (header record, if any, + block header + data records).
    public var size: Int

    public init(blockNumber: Int32, firstEntryId: Int64, lastEntryId: Int64, firstKey: Int64, lastKey: Int64,
                maxTimestamp: Int64, size: Int) {
        self.blockNumber = blockNumber
        self.firstEntryId = firstEntryId
        self.lastEntryId = lastEntryId
        self.firstKey = firstKey
        self.lastKey = lastKey
        self.maxTimestamp = maxTimestamp
        self.size = size
    }

    public var entryCount: Int { Int(lastEntryId - firstEntryId + 1) }
}

/// A block whose every record CRC and whose block CRC were verified.
public struct DecodedBlock: Sendable {
    public var info: BlockInfo
    public var entries: [SegmentEntry]
    /// The segment header record, present in block 0 (and wherever the writer asked for it).
    public var header: SegmentHeader?
    public init(info: BlockInfo, entries: [SegmentEntry], header: SegmentHeader? = nil) {
        self.info = info
        self.entries = entries
        self.header = header
    }
}

/// The commit point of a segment: the block index, the last add-confirmed entry and the compacted flag.
public struct SegmentFooter: Sendable, Equatable {
    /// In block order; block i starts at byte offset `sum(blocks[0..<i].size)` of the concatenated log.
    public var blocks: [BlockInfo]
    /// Last add-confirmed entry id; -1 when unset. Readers never go past it.
    public var lac: Int64
    public var compacted: Bool
    public var totalRecords: Int
    public init(blocks: [BlockInfo], lac: Int64, compacted: Bool, totalRecords: Int) {
        self.blocks = blocks
        self.lac = lac
        self.compacted = compacted
        self.totalRecords = totalRecords
    }
}

/// Encoder and decoder of the segment format (ARCHITECTURE.md §5-6, reference digest §4). Pure functions over
/// bytes: no I/O, safe on untrusted input (every decoder throws `WoodpeckerError(.corrupted)` and never traps).
///
/// Record framing: `CRC32C(4, Castagnoli, over type+length+payload) | type(1) | length(4) | payload`, little-endian.
/// (The original Woodpecker uses IEEE CRC-32; we use CRC-32C because it runs in hardware at ~9 GB/s here, and our
/// records already differ from the original by carrying keys and timestamps.)
/// A block object is `[Header][BlockHeader][Data...]` (Header only in block 0 or when asked); a footer object is
/// `[Index x N][Footer]`. A local log file is the blocks concatenated, then the footer, which is why index records
/// carry each block's byte offset and the footer's `indexOffset` is the total size of the blocks.
public enum SegmentCodec {
    public static let formatVersion: UInt16 = 1
    static let recordOverhead = 9
    static let headerPayload = 16
    static let blockHeaderPayload = 52
    static let dataPrefix = 16
    static let indexPayload = 56
    static let footerPayload = 44
    static let headerMagic: [UInt8] = [0x48, 0x44, 0x52, 0x01]  // "HDR\x01"
    static let footerMagic: [UInt8] = [0x46, 0x54, 0x52, 0x01]  // "FTR\x01"

    /// Bytes of a block object that always contain its block header (header record + block header record):
    /// read this much from the start of a block object to call `decodeBlockInfo`.
    public static let blockInfoPrefixBytes = recordOverhead + headerPayload + recordOverhead + blockHeaderPayload
    /// Size of the footer record at the very end of a footer object or a finalized log file.
    public static let footerRecordBytes = recordOverhead + footerPayload
    /// Size of one index record.
    public static let indexRecordBytes = recordOverhead + indexPayload
    /// Fixed bytes one data record adds to its payload.
    public static let dataRecordOverhead = recordOverhead + dataPrefix

    // MARK: blocks

    /// One block object: `[Header if blockNumber == 0 or includeHeader][BlockHeader][Data...]`.
    ///
    /// Preconditions (programmer errors): `entries` is not empty, keys are non-decreasing, the data bytes fit the
    /// 32-bit block length. `minCapacity`: allocate at least this much (a caller that wants a large block mapped on
    /// its own rather than taken from an allocator arena passes the allocator's mmap threshold; pages past the
    /// block's size are never touched).
    public static func encodeBlock(blockNumber: Int32, firstEntryId: Int64, entries: [SegmentEntry],
                                   includeHeader: Bool, minCapacity: Int = 0) -> ByteBuffer {
        precondition(!entries.isEmpty, "a block holds at least one entry")
        precondition(blockNumber >= 0 && firstEntryId >= 0, "block number and entry ids are not negative")
        var dataBytes = 0
        var maxTimestamp = Int64.min
        var previousKey = Int64.min
        for e in entries {
            precondition(e.key >= previousKey, "entry keys must be non-decreasing within a segment")
            previousKey = e.key
            maxTimestamp = max(maxTimestamp, e.timestamp)
            dataBytes += dataRecordOverhead + e.payload.readableBytes
        }
        precondition(dataBytes <= Int(UInt32.max), "block data exceeds 4 GiB")
        let withHeader = includeHeader || blockNumber == 0
        var out = RecordWriter(capacity: max(minCapacity, (withHeader ? recordOverhead + headerPayload : 0)
            + recordOverhead + blockHeaderPayload + dataBytes))
        if withHeader {
            out.record(.header) { w in
                w.append(formatVersion)
                w.append(UInt16(0))
                w.append(firstEntryId)
                w.bytes.append(contentsOf: headerMagic)
            }
        }
        let blockHeaderAt = out.bytes.count
        out.bytes.append(contentsOf: repeatElement(0, count: recordOverhead + blockHeaderPayload))
        let dataStart = out.bytes.count
        var blockCrc: UInt32 = 0
        for e in entries {
            let start = out.bytes.count
            let crc = out.record(.data) { w in
                w.append(e.key)
                w.append(e.timestamp)
                e.payload.withUnsafeReadableBytes { w.bytes.append(contentsOf: $0) }
            }
            blockCrc = out.bytes.withUnsafeBytes {
                extendBlockCrc(blockCrc, record: UnsafeRawBufferPointer(rebasing: $0[start...]), recordCrc: crc)
            }
        }
        var header = RecordWriter(capacity: recordOverhead + blockHeaderPayload)
        header.record(.blockHeader) { w in
            w.append(blockNumber)
            w.append(firstEntryId)
            w.append(firstEntryId + Int64(entries.count) - 1)
            w.append(entries[0].key)
            w.append(entries[entries.count - 1].key)
            w.append(maxTimestamp)
            w.append(UInt32(dataBytes))
            w.append(blockCrc)
        }
        out.bytes.replaceSubrange(blockHeaderAt..<dataStart, with: header.bytes)
        return ByteBuffer(bytes: out.bytes)
    }

    /// Decodes a whole block object, verifying every record CRC, the block CRC, the entry count and the key and
    /// timestamp bounds. Throws `WoodpeckerError(.corrupted, "segment block: <what>")`; never returns bad data.
    /// Entry payloads share the input's storage (no copy).
    public static func decodeBlock(_ bytes: ByteBuffer) throws -> DecodedBlock {
        do {
            return try decodeBlockOrFault(bytes)
        } catch {
            throw WoodpeckerError(.corrupted, "segment block: \(error.what); re-read the object or treat the block as lost")
        }
    }

    /// Verifies a whole block object with exactly `decodeBlock`'s checks (every record CRC, the block CRC, the entry
    /// count, key order, the key and timestamp bounds) and returns its `BlockInfo`, without keeping the entries.
    /// Rejects with the same `WoodpeckerError(.corrupted, "segment block: <what>")`. For a receiver that only
    /// stores or forwards the bytes (a LogStore node); use `decodeBlock` to read entries.
    public static func verifyBlock(_ bytes: ByteBuffer) throws -> BlockInfo {
        do {
            return try scanBlock(bytes) { _, _, _, _ in }.info
        } catch {
            throw WoodpeckerError(.corrupted, "segment block: \(error.what); re-read the object or treat the block as lost")
        }
    }

    /// The fence object: one byte "F" at a block key of a segment, put (conditionally) by a recovering writer after
    /// the last block it sealed in, so that the old writer's (or a LogStore's) next put there fails.
    public static let fenceObject = ByteBuffer(bytes: [0x46])
    public static func isFenceObject(_ b: ByteBuffer) -> Bool { b.readableBytes == 1 && b == fenceObject }

    /// Splits a run object (one or more consecutive blocks back to back, as a LogStore uploads them) into its block
    /// objects, slices that share the input's storage. Checks only the framing (each block header and that the
    /// blocks fill the object exactly); `decodeBlock`/`verifyBlock` check each block's content.
    /// Throws `WoodpeckerError(.corrupted, "segment run: <what>")`.
    public static func splitRun(_ bytes: ByteBuffer) throws -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        var at = bytes.readerIndex
        do {
            var previous: Int32?
            while at < bytes.writerIndex {
                let rest = try bytes.getSlice(at: at, length: bytes.writerIndex - at)
                let info = try decodeBlockPrefix(rest).info
                guard info.size <= rest.readableBytes else {
                    throw CodecFault("block \(info.blockNumber) at byte \(at - bytes.readerIndex) needs \(info.size) bytes, \(rest.readableBytes) remain")
                }
                if let p = previous, p &+ 1 != info.blockNumber {
                    throw CodecFault("block \(info.blockNumber) follows block \(p)")
                }
                previous = info.blockNumber
                out.append(try bytes.getSlice(at: at, length: info.size))
                at += info.size
            }
        } catch let fault as CodecFault {
            throw WoodpeckerError(.corrupted, "segment run: \(fault.what); re-read the object or treat the run as lost")
        } catch {
            throw WoodpeckerError(.corrupted, "segment run: \(error)")
        }
        guard !out.isEmpty else { throw WoodpeckerError(.corrupted, "segment run: empty object") }
        return out
    }

    /// Decodes every block of a run object (see `splitRun`), each fully verified as by `decodeBlock`.
    public static func decodeRun(_ bytes: ByteBuffer) throws -> [DecodedBlock] {
        try splitRun(bytes).map { try decodeBlock($0) }
    }

    /// Decodes only the block header (and header record, if any) from the first bytes of a block object, for
    /// recovery probes; `blockInfoPrefixBytes` always suffice. `size` is computed from the block header.
    /// Does not verify the data (use `decodeBlock` for that).
    public static func decodeBlockInfo(_ prefix: ByteBuffer) throws -> BlockInfo {
        do {
            return try decodeBlockPrefix(prefix).info
        } catch {
            throw WoodpeckerError(.corrupted, "segment block header: \(error.what)")
        }
    }

    /// The CRC-32C of a whole block object (`CRC32C.checksum(bytes)`) from its header records and the data CRC its
    /// block header states, without a pass over the data; nil if the header records do not decode. Equal to the
    /// checksum of the bytes only for a block whose data CRC holds: call it on blocks `verifyBlock` accepted.
    public static func blockObjectChecksum(_ bytes: ByteBuffer) -> UInt32? {
        guard let prefix = try? decodeBlockPrefix(bytes),
              let headBytes = try? bytes.getSlice(at: bytes.readerIndex, length: prefix.dataStart - bytes.readerIndex)
        else { return nil }
        let head = CRC32C.checksum(headBytes)
        return CRC32C.combine(head, prefix.blockHeader.blockCrc, length: bytes.writerIndex - prefix.dataStart)
    }

    // MARK: footer

    /// A footer object: `[Index x N][Footer]`; index record i carries block i's byte offset in the concatenated log.
    public static func encodeFooter(_ footer: SegmentFooter) -> ByteBuffer {
        precondition(footer.totalRecords >= 0 && footer.totalRecords <= Int(UInt32.max), "totalRecords out of range")
        precondition(footer.blocks.count <= Int(Int32.max), "too many blocks")
        var out = RecordWriter(capacity: footer.blocks.count * indexRecordBytes + footerRecordBytes)
        var offset: Int64 = 0
        for b in footer.blocks {
            precondition(b.size > 0 && b.size <= Int(UInt32.max), "block size out of range")
            out.record(.index) { w in
                w.append(b.blockNumber)
                w.append(offset)
                w.append(UInt32(b.size))
                w.append(b.firstEntryId)
                w.append(b.lastEntryId)
                w.append(b.firstKey)
                w.append(b.lastKey)
                w.append(b.maxTimestamp)
            }
            offset += Int64(b.size)
        }
        let indexLength = out.bytes.count
        out.record(.footer) { w in
            w.append(Int32(footer.blocks.count))
            w.append(UInt32(footer.totalRecords))
            w.append(UInt64(offset))
            w.append(UInt64(offset))
            w.append(UInt32(indexLength))
            w.append(formatVersion)
            w.append(UInt16(footer.compacted ? 1 : 0))
            w.bytes.append(contentsOf: footerMagic)
            w.append(footer.lac)
        }
        return ByteBuffer(bytes: out.bytes)
    }

    /// Decodes `[Index x N][Footer]` (a footer object, or a log file's bytes from `indexOffset` to the end).
    /// Verifies every CRC, the magic, the version, the index length and that block offsets are contiguous.
    public static func decodeFooter(_ bytes: ByteBuffer) throws -> SegmentFooter {
        do {
            return try decodeFooterOrFault(bytes)
        } catch {
            throw WoodpeckerError(.corrupted, "segment footer: \(error.what); the segment must be recovered from its blocks")
        }
    }

    /// Decodes only the trailing footer record (the last `footerRecordBytes` of `bytes`), for a log file whose
    /// index must be read separately from `indexOffset`.
    public static func decodeFooterRecord(_ bytes: ByteBuffer) throws -> FooterRecord {
        do {
            guard bytes.readableBytes >= footerRecordBytes else {
                throw CodecFault("need \(footerRecordBytes) bytes for the footer record, have \(bytes.readableBytes)")
            }
            let raw = try readRecord(bytes, at: bytes.writerIndex - footerRecordBytes)
            guard raw.type == RecordType.footer.rawValue else {
                throw CodecFault("expected a footer record at the end, found type \(raw.type)")
            }
            return try parseFooter(raw.payload)
        } catch let fault as CodecFault {
            throw WoodpeckerError(.corrupted, "segment footer: \(fault.what)")
        }
    }

    // MARK: search

    /// Binary search: index of the block holding `entryId`, or nil. Blocks must be in entry-id order and contiguous.
    public static func blockIndex(containingEntry entryId: Int64, in blocks: [BlockInfo]) -> Int? {
        // Last block whose first id <= entryId.
        let after = partitionPoint(blocks.count) { blocks[$0].firstEntryId > entryId }
        guard after > 0, entryId <= blocks[after - 1].lastEntryId else { return nil }
        return after - 1
    }

    /// Binary search: index of the first block whose last key >= `key` (where a reader looking for `key` starts),
    /// or nil when every key is smaller. Keys are non-decreasing across blocks.
    public static func blockIndex(forKey key: Int64, in blocks: [BlockInfo]) -> Int? {
        let i = partitionPoint(blocks.count) { blocks[$0].lastKey >= key }
        return i < blocks.count ? i : nil
    }

    /// Index of the first block with `maxTimestamp >= ts`, or nil. Timestamps are set by producers and need not be
    /// monotonic across blocks, so a binary search over per-block maxima could skip the right block; this scans the
    /// index linearly (a segment has at most a few thousand blocks, so this costs microseconds).
    public static func blockIndex(forTimestamp ts: Int64, in blocks: [BlockInfo]) -> Int? {
        blocks.firstIndex { $0.maxTimestamp >= ts }
    }

    /// First index in 0..<count where `isAfter` is true, for a predicate that is false then true.
    static func partitionPoint(_ count: Int, _ isAfter: (Int) -> Bool) -> Int {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if isAfter(mid) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}
