import WoodpeckerCore

/// What survives in a local log file (blocks written back to back, maybe a footer, maybe a torn tail).
public struct LogRecovery: Sendable {
    /// Every complete block, in file order; `blocks[i].size` bytes start at `blockOffsets[i]`.
    public var blocks: [BlockInfo]
    public var blockOffsets: [Int]
    /// The segment header record at the start of the file, if it survived.
    public var header: SegmentHeader?
    /// The footer, when the file was finalized and the footer is intact.
    public var footer: SegmentFooter?
    /// Bytes worth keeping: the end of the footer, or of the last complete block. Truncate the file here before
    /// appending again.
    public var validBytes: Int
    /// Why the scan stopped early (damage or a torn block), nil when the whole file was consumed.
    public var stopReason: String?
}

extension SegmentCodec {
    /// Rebuilds the block index of a log file from its block headers (writer recovery without a footer).
    ///
    /// A block counts only when its header and all the data bytes it announces are present, every record CRC
    /// matches and its block CRC matches; the scan stops at the first block that fails. The entry ids of the
    /// blocks are not checked for contiguity (the caller knows where the segment starts).
    public static func decodeLog(_ bytes: ByteBuffer) -> LogRecovery {
        let scan = decodeRecords(bytes)
        var out = LogRecovery(blocks: [], blockOffsets: [], header: nil, footer: nil, validBytes: 0, stopReason: nil)
        var i = 0
        while i < scan.records.count {
            let rec = scan.records[i]
            switch rec.record {
            case .header(let h):
                // Read with the block that follows it; the file's first one is the segment header.
                if i == 0 { out.header = h }
                i += 1
            case .blockHeader(let bh):
                // A block object starts with its header record when it has one.
                let blockStart = i > 0 && isHeader(scan.records[i - 1].record) ? scan.records[i - 1].offset : rec.offset
                let dataStart = rec.offset + recordOverhead + blockHeaderPayload
                let dataEnd = dataStart + Int(bh.blockLength)
                guard dataEnd <= scan.validBytes else {
                    out.stopReason = "block \(bh.info.blockNumber) at byte \(blockStart) is incomplete (torn write)"
                    return out
                }
                do {
                    // Re-decode the whole block: counts, block CRC and bounds, as a reader would.
                    let block = try bytes.getSlice(at: bytes.readerIndex + blockStart, length: dataEnd - blockStart)
                    out.blocks.append(try decodeBlockOrFault(block).info)
                    out.blockOffsets.append(blockStart)
                    out.validBytes = dataEnd
                } catch {
                    out.stopReason = "block \(bh.info.blockNumber) at byte \(blockStart): \(error.what)"
                    return out
                }
                while i < scan.records.count && scan.records[i].offset < dataEnd { i += 1 }
            case .index:
                // Index records run up to the footer; decode them together with it.
                let tailStart = rec.offset
                guard let footerAt = scan.records[i...].firstIndex(where: { if case .footer = $0.record { true } else { false } })
                else {
                    out.stopReason = "index without a footer at byte \(tailStart) (finalize was interrupted)"
                    return out
                }
                return finishWithFooter(bytes, from: tailStart, to: scan.records[footerAt].offset + footerRecordBytes, &out)
            case .footer:
                return finishWithFooter(bytes, from: rec.offset, to: rec.offset + footerRecordBytes, &out)
            default:
                out.stopReason = "unexpected record at byte \(rec.offset)"
                return out
            }
        }
        out.stopReason = scan.stopReason
        if out.stopReason == nil && out.validBytes < scan.validBytes {
            out.stopReason = "a header record without its block at byte \(out.validBytes) (torn write)"
        }
        return out
    }

    private static func isHeader(_ r: SegmentRecord) -> Bool {
        if case .header = r { true } else { false }
    }

    private static func finishWithFooter(_ bytes: ByteBuffer, from: Int, to: Int, _ out: inout LogRecovery) -> LogRecovery {
        do {
            let tail = try bytes.getSlice(at: bytes.readerIndex + from, length: to - from)
            let footer = try decodeFooterOrFault(tail)
            guard footer.blocks.count == out.blocks.count, from == out.validBytes else {
                out.stopReason = "footer lists \(footer.blocks.count) blocks, the file holds \(out.blocks.count)"
                return out
            }
            out.footer = footer
            out.validBytes = to
            if to < bytes.readableBytes { out.stopReason = "\(bytes.readableBytes - to) bytes after the footer" }
        } catch {
            out.stopReason = "footer at byte \(from): \(error.what)"
        }
        return out
    }
}
