import Testing
import WoodpeckerCore
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// Random inputs for the property tests (seeded, so every failure reproduces).
struct CodecGen {
    var rng: SplitMix64
    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &rng) }
    mutating func i64(_ r: ClosedRange<Int64>) -> Int64 { Int64.random(in: r, using: &rng) }

    mutating func entries(count: Int? = nil, maxPayload: Int = 200, startKey: Int64? = nil) -> [SegmentEntry] {
        let n = count ?? int(1...20)
        var key = startKey ?? i64(-1_000...1_000_000)
        return (0..<n).map { _ in
            key += i64(0...3)  // non-decreasing, sometimes equal
            let size = int(0...10) == 0 ? int(0...5_000) : int(0...maxPayload)
            return SegmentEntry(key: key, timestamp: i64(-5...2_000_000_000_000),
                                payload: ByteBuffer(bytes: bytes(count: size, seed: rng.next())))
        }
    }

    /// A contiguous run of blocks as a writer produces them.
    mutating func blocks(count: Int) -> [BlockInfo] {
        var id = i64(0...1_000)
        var key = i64(-100...100)
        return (0..<count).map { n in
            let entries = Int64(int(1...5))
            let firstKey = key + i64(0...2)
            let lastKey = firstKey + i64(0...10)
            key = lastKey
            defer { id += entries }
            return BlockInfo(blockNumber: Int32(n), firstEntryId: id, lastEntryId: id + entries - 1, firstKey: firstKey,
                             lastKey: lastKey, maxTimestamp: i64(0...50), size: int(80...100_000))
        }
    }
}

func expectCorrupted(_ body: () throws -> Void, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected .corrupted, decoding succeeded. \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch let e as WoodpeckerError {
        #expect(e.code == .corrupted, comment, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected WoodpeckerError, got \(error)", sourceLocation: sourceLocation)
    }
}

func prefix(_ b: ByteBuffer, _ n: Int) -> ByteBuffer { ByteBuffer(bytes: b.readableBytesArray[0..<n]) }

func flipping(_ b: ByteBuffer, bit: Int) -> ByteBuffer {
    var a = b.readableBytesArray
    a[bit / 8] ^= UInt8(1 << (bit % 8))
    return ByteBuffer(bytes: a)
}

@Suite struct SegmentCodecTests {
    @Test func randomBlocksRoundTrip() throws {
        var g = CodecGen(seed: 1)
        for _ in 0..<300 {
            let entries = g.entries()
            let number = Int32(g.int(0...5))
            let first = g.i64(0...1_000_000)
            let includeHeader = g.int(0...1) == 1
            let encoded = SegmentCodec.encodeBlock(blockNumber: number, firstEntryId: first, entries: entries,
                                                   includeHeader: includeHeader)
            let block = try SegmentCodec.decodeBlock(encoded)
            #expect(block.entries == entries)
            let expected = BlockInfo(blockNumber: number, firstEntryId: first, lastEntryId: first + Int64(entries.count) - 1,
                                     firstKey: entries.first!.key, lastKey: entries.last!.key,
                                     maxTimestamp: entries.map(\.timestamp).max()!, size: encoded.readableBytes)
            #expect(block.info == expected)
            #expect((block.header != nil) == (number == 0 || includeHeader))
            #expect(block.header.map { $0.firstEntryId == first && $0.version == SegmentCodec.formatVersion } ?? true)
            // The header alone, from the first bytes of the object.
            let probeLength = min(encoded.readableBytes, SegmentCodec.blockInfoPrefixBytes)
            #expect(try SegmentCodec.decodeBlockInfo(prefix(encoded, probeLength)) == expected)
        }
    }

    /// Compaction asks for merged blocks in a buffer of at least the allocator's mmap threshold: the bytes must be
    /// exactly those of a block encoded at its own size, and the spare capacity never part of it.
    @Test func aLargerMinimumCapacityChangesNothingEncoded() throws {
        var g = CodecGen(seed: 7)
        for _ in 0..<50 {
            let entries = g.entries()
            let plain = SegmentCodec.encodeBlock(blockNumber: 0, firstEntryId: 5, entries: entries, includeHeader: true)
            let roomy = SegmentCodec.encodeBlock(blockNumber: 0, firstEntryId: 5, entries: entries, includeHeader: true,
                                                 minCapacity: 1 << 20)
            #expect(roomy.readableBytes == plain.readableBytes)
            #expect(roomy.readableBytesArray == plain.readableBytesArray)
            #expect(try SegmentCodec.decodeBlock(roomy).entries == entries)
        }
    }

    @Test func decodesFromABufferThatIsASliceOfALargerOne() throws {
        var g = CodecGen(seed: 2)
        let entries = g.entries(count: 5)
        let encoded = SegmentCodec.encodeBlock(blockNumber: 3, firstEntryId: 10, entries: entries, includeHeader: false)
        var outer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
        outer.writeBuffer(encoded)
        outer.writeBytes([0xDD])
        let slice = try outer.getSlice(at: 3, length: encoded.readableBytes)
        #expect(try SegmentCodec.decodeBlock(slice).entries == entries)
        #expect(SegmentCodec.decodeRecords(slice).validBytes == encoded.readableBytes)
    }

    @Test func layoutIsTheDocumentedRecordFraming() throws {
        let e = SegmentEntry(key: 0x0102, timestamp: 7, payload: ByteBuffer(bytes: [0xEE, 0xFF]))
        let b = SegmentCodec.encodeBlock(blockNumber: 0, firstEntryId: 42, entries: [e], includeHeader: false)
        let a = b.readableBytesArray
        func u32(_ i: Int) -> UInt32 { try! b.getInteger(at: i, endianness: .little) }
        func i64(_ i: Int) -> Int64 { try! b.getInteger(at: i, endianness: .little) }
        // Header record: CRC | type 1 | length 16 | version 1, flags 0, firstEntryId, "HDR\x01".
        #expect(a[4] == 1 && u32(5) == 16)
        #expect(u32(0) == CRC32C.checksum(Array(a[4..<25])))
        #expect(a[9] == 1 && a[10] == 0 && i64(13) == 42 && Array(a[21..<25]) == [0x48, 0x44, 0x52, 0x01])
        // Block header: type 5, 52 bytes, blockLength and blockCrc cover the data records that follow.
        #expect(a[29] == 5 && u32(30) == 52)
        let dataStart = 25 + 9 + 52
        #expect(u32(25 + 9 + 44) == UInt32(a.count - dataStart))
        #expect(u32(25 + 9 + 48) == CRC32C.checksum(Array(a[dataStart...])))
        // Data record: type 2, key, timestamp, payload.
        #expect(a[dataStart + 4] == 2 && u32(dataStart + 5) == 18)
        #expect(i64(dataStart + 9) == 0x0102 && i64(dataStart + 17) == 7 && Array(a[(dataStart + 25)...]) == [0xEE, 0xFF])
    }

    @Test func everyTruncationOfABlockIsRejected() throws {
        var g = CodecGen(seed: 3)
        for c in 0..<40 {
            let entries = g.entries(count: g.int(1...6), maxPayload: 60)
            let encoded = SegmentCodec.encodeBlock(blockNumber: Int32(c % 3), firstEntryId: 5, entries: entries,
                                                   includeHeader: c % 2 == 0)
            for n in 0..<encoded.readableBytes {
                expectCorrupted({ _ = try SegmentCodec.decodeBlock(prefix(encoded, n)) }, "case \(c) length \(n)")
            }
            var longer = encoded
            longer.writeBytes([0])
            expectCorrupted({ _ = try SegmentCodec.decodeBlock(longer) }, "case \(c) one extra byte")
        }
    }

    @Test func everySingleBitFlipInABlockIsDetected() throws {
        var g = CodecGen(seed: 4)
        // Exhaustive over a few small blocks, then random flips over larger ones.
        for c in 0..<4 {
            let encoded = SegmentCodec.encodeBlock(blockNumber: Int32(c), firstEntryId: 100, entries: g.entries(count: 3, maxPayload: 20),
                                                   includeHeader: c == 1)
            for bit in 0..<encoded.readableBytes * 8 {
                expectCorrupted({ _ = try SegmentCodec.decodeBlock(flipping(encoded, bit: bit)) }, "case \(c) bit \(bit)")
            }
        }
        for c in 0..<300 {
            let encoded = SegmentCodec.encodeBlock(blockNumber: Int32(c % 4), firstEntryId: 0, entries: g.entries(),
                                                   includeHeader: false)
            let bit = g.int(0...(encoded.readableBytes * 8 - 1))
            expectCorrupted({ _ = try SegmentCodec.decodeBlock(flipping(encoded, bit: bit)) }, "case \(c) bit \(bit)")
        }
    }

    /// The block CRC is joined from the record CRCs for records of 2 KiB and more and run over smaller ones: blocks
    /// mixing sizes around that threshold verify and decode, `blockObjectChecksum` equals the checksum of the bytes,
    /// and damage inside a large record is still reported as a block CRC mismatch.
    @Test func blocksMixingLargeAndSmallRecordsVerifyInOnePass() throws {
        let sizes = [0, 2_015, 2_016, 2_017, 100, 100_000, 2_100, 5, 65_536]
        var key: Int64 = 0
        let entries = sizes.map { n -> SegmentEntry in
            key += 1
            return SegmentEntry(key: key, timestamp: key * 10, payload: ByteBuffer(bytes: bytes(count: n, seed: UInt64(n + 1))))
        }
        for (number, header) in [(Int32(0), true), (Int32(3), false), (Int32(4), true)] {
            let block = SegmentCodec.encodeBlock(blockNumber: number, firstEntryId: 7, entries: entries, includeHeader: header)
            #expect(try SegmentCodec.verifyBlock(block).entryCount == sizes.count)
            #expect(try SegmentCodec.decodeBlock(block).entries.map(\.payload) == entries.map(\.payload))
            #expect(SegmentCodec.blockObjectChecksum(block) == CRC32C.checksum(block))
            // A bit in the middle of the 100,000-byte payload (each record adds 25 bytes before its payload).
            let inLarge = block.readableBytes - (65_536 + 25) - (5 + 25) - (2_100 + 25) - 100_000 / 2
            let damaged = flipping(block, bit: inLarge * 8 + 3)
            #expect(throws: WoodpeckerError.self) { try SegmentCodec.verifyBlock(damaged) }
            do { _ = try SegmentCodec.decodeBlock(damaged) } catch { #expect("\(error)".contains("block \(number) CRC mismatch")) }
        }
    }

    @Test func corruptionErrorsSayWhatFailed() throws {
        var g = CodecGen(seed: 5)
        let encoded = SegmentCodec.encodeBlock(blockNumber: 1, firstEntryId: 0, entries: g.entries(count: 4, maxPayload: 50),
                                               includeHeader: false)
        func message(_ b: ByteBuffer) -> String {
            do { _ = try SegmentCodec.decodeBlock(b); return "decoded" } catch { return "\(error)" }
        }
        #expect(message(flipping(encoded, bit: (encoded.readableBytes - 1) * 8)).contains("block 1 CRC mismatch"))
        #expect(message(flipping(encoded, bit: 40)).contains("record CRC mismatch at byte 0"))
        #expect(message(prefix(encoded, 30)).contains("torn record"))
        #expect(message(prefix(encoded, encoded.readableBytes - 1)).contains("announces"))
        #expect(message(ByteBuffer()).hasPrefix("corrupted"))
        // A future format version is refused by name, not misread.
        var a = SegmentCodec.encodeBlock(blockNumber: 0, firstEntryId: 0, entries: g.entries(count: 1), includeHeader: true)
            .readableBytesArray
        a[9] = 2
        let crc = CRC32C.checksum(Array(a[4..<25]))
        withUnsafeBytes(of: crc.littleEndian) { a.replaceSubrange(0..<4, with: $0) }
        #expect(message(ByteBuffer(bytes: a)).contains("unsupported segment format version 2"))
    }

    @Test func footersRoundTrip() throws {
        var g = CodecGen(seed: 6)
        for c in 0..<300 {
            let footer = SegmentFooter(blocks: g.blocks(count: g.int(0...40)), lac: g.i64(-1...1_000_000),
                                       compacted: c % 3 == 0, totalRecords: g.int(0...1_000_000))
            let encoded = SegmentCodec.encodeFooter(footer)
            #expect(encoded.readableBytes == footer.blocks.count * SegmentCodec.indexRecordBytes + SegmentCodec.footerRecordBytes)
            #expect(try SegmentCodec.decodeFooter(encoded) == footer)
            let record = try SegmentCodec.decodeFooterRecord(encoded)
            let totalSize = UInt64(footer.blocks.reduce(0) { $0 + $1.size })
            #expect(record.lac == footer.lac && record.compacted == footer.compacted)
            #expect(record.totalSize == totalSize && record.indexOffset == totalSize)
            #expect(Int(record.indexLength) == footer.blocks.count * SegmentCodec.indexRecordBytes)
        }
    }

    @Test func everyTruncationAndBitFlipOfAFooterIsDetected() throws {
        var g = CodecGen(seed: 7)
        for c in 0..<6 {
            let footer = SegmentFooter(blocks: g.blocks(count: c), lac: 17, compacted: c % 2 == 1, totalRecords: 99)
            let encoded = SegmentCodec.encodeFooter(footer)
            for n in 0..<encoded.readableBytes {
                expectCorrupted({ _ = try SegmentCodec.decodeFooter(prefix(encoded, n)) }, "case \(c) length \(n)")
                // Losing the front (a short read of the index) is caught as well.
                var tail = encoded
                try tail.skip(n + 1)
                expectCorrupted({ _ = try SegmentCodec.decodeFooter(tail) }, "case \(c) without first \(n + 1) bytes")
            }
            for bit in 0..<encoded.readableBytes * 8 {
                expectCorrupted({ _ = try SegmentCodec.decodeFooter(flipping(encoded, bit: bit)) }, "case \(c) bit \(bit)")
            }
        }
    }

    /// A local log file: blocks back to back, then the footer; every record offset is known.
    @Test func decodeRecordsStopsExactlyAtTheFirstDamagedRecord() throws {
        var g = CodecGen(seed: 8)
        for c in 0..<150 {
            var log = ByteBuffer()
            var infos: [BlockInfo] = []
            var expected: [SegmentRecord] = []
            var nextId: Int64 = 0
            var key: Int64 = 0
            for n in 0..<g.int(1...4) {
                let entries = g.entries(count: g.int(1...5), maxPayload: 40, startKey: key)
                key = entries.last!.key
                let block = SegmentCodec.encodeBlock(blockNumber: Int32(n), firstEntryId: nextId, entries: entries,
                                                     includeHeader: false)
                let decoded = try SegmentCodec.decodeBlock(block)
                infos.append(decoded.info)
                if let h = decoded.header { expected.append(.header(h)) }
                expected.append(try #require(SegmentCodec.decodeRecords(block).records.first {
                    if case .blockHeader = $0.record { true } else { false }
                }).record)
                expected += entries.map { .data($0) }
                nextId += Int64(entries.count)
                log.writeBuffer(block)
            }
            let footer = SegmentFooter(blocks: infos, lac: nextId - 1, compacted: false, totalRecords: Int(nextId))
            log.writeBuffer(SegmentCodec.encodeFooter(footer))

            let clean = SegmentCodec.decodeRecords(log)
            #expect(clean.stopReason == nil)
            #expect(clean.validBytes == log.readableBytes)
            #expect(Array(clean.records.map(\.record).prefix(expected.count)) == expected)
            #expect(clean.records.count == expected.count + infos.count + 1)
            guard case .footer(let f) = clean.records.last?.record else {
                Issue.record("case \(c): last record is not the footer")
                continue
            }
            #expect(f.lac == nextId - 1 && Int(f.totalSize) == infos.reduce(0) { $0 + $1.size })
            let offsets = clean.records.map(\.offset) + [log.readableBytes]

            // Damage record j: flip one bit inside it, or cut the log somewhere inside it.
            let j = g.int(0...(clean.records.count - 1))
            let bit = g.int(offsets[j] * 8...(offsets[j + 1] * 8 - 1))
            let flipped = SegmentCodec.decodeRecords(flipping(log, bit: bit))
            #expect(flipped.records == Array(clean.records.prefix(j)), "case \(c) record \(j) bit \(bit)")
            #expect(flipped.validBytes == offsets[j])
            #expect(flipped.stopReason != nil)

            let cut = g.int(offsets[j]...(offsets[j + 1] - 1))
            let torn = SegmentCodec.decodeRecords(prefix(log, cut))
            #expect(torn.records == Array(clean.records.prefix(j)), "case \(c) record \(j) cut at \(cut)")
            #expect(torn.validBytes == offsets[j])
            #expect((torn.stopReason != nil) == (cut > offsets[j]))
        }
    }

    @Test func blockSearchesAgreeWithALinearScan() throws {
        var g = CodecGen(seed: 9)
        for _ in 0..<300 {
            let blocks = g.blocks(count: g.int(0...30))
            let ids = (blocks.first?.firstEntryId ?? 0)...(blocks.last?.lastEntryId ?? 0)
            let keys = (blocks.first?.firstKey ?? 0)...(blocks.last?.lastKey ?? 0)
            for _ in 0..<20 {
                let id = g.i64((ids.lowerBound - 3)...(ids.upperBound + 3))
                #expect(SegmentCodec.blockIndex(containingEntry: id, in: blocks)
                        == blocks.firstIndex { $0.firstEntryId <= id && id <= $0.lastEntryId })
                let key = g.i64((keys.lowerBound - 3)...(keys.upperBound + 3))
                #expect(SegmentCodec.blockIndex(forKey: key, in: blocks) == blocks.firstIndex { $0.lastKey >= key })
                let ts = g.i64(-2...52)
                #expect(SegmentCodec.blockIndex(forTimestamp: ts, in: blocks) == blocks.firstIndex { $0.maxTimestamp >= ts })
            }
            for (i, b) in blocks.enumerated() {
                #expect(SegmentCodec.blockIndex(containingEntry: b.firstEntryId, in: blocks) == i)
                #expect(SegmentCodec.blockIndex(containingEntry: b.lastEntryId, in: blocks) == i)
            }
        }
    }

    @Test func throughputOfOneMebibyteBlocks() throws {
        let entries = (0..<1024).map { i in
            SegmentEntry(key: Int64(i), timestamp: Int64(i), payload: ByteBuffer(bytes: bytes(count: 1024, seed: UInt64(i))))
        }
        let rounds = 8
        var encoded = ByteBuffer()
        let t0 = Clock.monotonicNanos()
        for r in 0..<rounds {
            encoded = SegmentCodec.encodeBlock(blockNumber: Int32(r), firstEntryId: 0, entries: entries, includeHeader: true)
        }
        let t1 = Clock.monotonicNanos()
        var decoded: [SegmentEntry] = []
        for _ in 0..<rounds { decoded = try SegmentCodec.decodeBlock(encoded).entries }
        let t2 = Clock.monotonicNanos()
        #expect(decoded == entries)
        let mb = Double(rounds * encoded.readableBytes) / 1e6
        print("segment codec, 1 MiB blocks (1024 x 1 KiB entries): encode \(Int(mb / (Double(t1 - t0) / 1e9))) MB/s, "
              + "decode+verify \(Int(mb / (Double(t2 - t1) / 1e9))) MB/s")
    }
}
