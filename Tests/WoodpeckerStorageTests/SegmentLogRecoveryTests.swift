import Testing
import WoodpeckerCore
import WoodpeckerStorage

/// A local log file as the writer produces it: blocks back to back, then (when finalized) the footer.
struct BuiltLog {
    var bytes = ByteBuffer()
    var infos: [BlockInfo] = []
    var ends: [Int] = []  // byte where each block ends
    var footerStart: Int? = nil

    init(_ g: inout CodecGen, blocks: Int, finalized: Bool) {
        var id: Int64 = 0
        var key: Int64 = 0
        for n in 0..<blocks {
            let entries = g.entries(count: g.int(1...4), maxPayload: 30, startKey: key)
            key = entries.last!.key
            let block = SegmentCodec.encodeBlock(blockNumber: Int32(n), firstEntryId: id, entries: entries,
                                                 includeHeader: g.int(0...3) == 0)
            infos.append(try! SegmentCodec.decodeBlock(block).info)
            bytes.writeBuffer(block)
            ends.append(bytes.readableBytes)
            id += Int64(entries.count)
        }
        if finalized {
            footerStart = bytes.readableBytes
            bytes.writeBuffer(SegmentCodec.encodeFooter(SegmentFooter(blocks: infos, lac: id - 1, compacted: false,
                                                                      totalRecords: Int(id))))
        }
    }

    var offsets: [Int] { ends.isEmpty ? [] : [0] + ends.dropLast() }
}

@Suite struct SegmentLogRecoveryTests {
    @Test func intactLogsRecoverEveryBlockAndTheFooter() throws {
        var g = CodecGen(seed: 20)
        for c in 0..<100 {
            let finalized = c % 2 == 0
            let log = BuiltLog(&g, blocks: g.int(0...6), finalized: finalized)
            let r = SegmentCodec.decodeLog(log.bytes)
            #expect(r.blocks == log.infos)
            #expect(r.blockOffsets == log.offsets)
            #expect(r.validBytes == log.bytes.readableBytes)
            #expect(r.stopReason == nil)
            #expect((r.footer != nil) == finalized)
            #expect(r.footer?.blocks ?? log.infos == log.infos)
            #expect(r.header?.firstEntryId == (log.infos.isEmpty ? nil : 0))
            // Each recovered block decodes from the file at its offset.
            for (info, offset) in zip(r.blocks, r.blockOffsets) {
                let slice = try log.bytes.getSlice(at: offset, length: info.size)
                #expect(try SegmentCodec.decodeBlock(slice).info == info)
            }
        }
    }

    @Test func everyTornTailKeepsExactlyTheCompleteBlocks() throws {
        var g = CodecGen(seed: 21)
        for c in 0..<8 {
            let log = BuiltLog(&g, blocks: 4, finalized: c % 2 == 0)
            let total = log.bytes.readableBytes
            for cut in 0..<total {
                let r = SegmentCodec.decodeLog(prefix(log.bytes, cut))
                let complete = log.ends.filter { $0 <= cut }.count
                #expect(r.blocks == Array(log.infos.prefix(complete)), "case \(c) cut \(cut)")
                #expect(r.validBytes == (complete == 0 ? 0 : log.ends[complete - 1]), "case \(c) cut \(cut)")
                #expect(r.footer == nil)
                #expect((r.stopReason == nil) == (cut == r.validBytes), "case \(c) cut \(cut)")
            }
        }
    }

    @Test func aDamagedBlockEndsRecoveryBeforeIt() throws {
        var g = CodecGen(seed: 22)
        for c in 0..<200 {
            let log = BuiltLog(&g, blocks: 5, finalized: true)
            let bit = g.int(0...(log.bytes.readableBytes * 8 - 1))
            let r = SegmentCodec.decodeLog(flipping(log.bytes, bit: bit))
            let damagedBlock = log.ends.firstIndex { bit / 8 < $0 }
            if let k = damagedBlock {
                #expect(r.blocks == Array(log.infos.prefix(k)), "case \(c) bit \(bit)")
                #expect(r.validBytes == log.offsets[k])
            } else {
                // Damage in the footer: every block survives, the footer does not.
                #expect(r.blocks == log.infos)
                #expect(r.validBytes == log.footerStart)
            }
            #expect(r.footer == nil)
            #expect(r.stopReason != nil)
        }
    }
}
