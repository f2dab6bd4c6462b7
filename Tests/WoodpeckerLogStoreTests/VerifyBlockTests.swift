import Testing
import WoodpeckerCore
import WoodpeckerStorage

/// Seeded random blocks (every failure reproduces).
struct BlockGen {
    var rng: SeededRandom

    init(seed: UInt64) { rng = SeededRandom(state: seed) }

    mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + Int(rng.next() % UInt64(r.count)) }
    mutating func i64(_ r: ClosedRange<Int64>) -> Int64 { r.lowerBound + Int64(rng.next() % UInt64(r.upperBound - r.lowerBound + 1)) }

    mutating func payload(_ size: Int) -> ByteBuffer {
        ByteBuffer(bytes: (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    /// Non-decreasing keys (sometimes equal), any timestamps (negative too), payloads from empty to a few KB.
    mutating func entries(count: Int? = nil, maxPayload: Int = 200) -> [SegmentEntry] {
        let n = count ?? int(1...40)
        var key = i64(-1_000_000...1_000_000)
        return (0..<n).map { _ in
            key += i64(0...3)
            let size = int(0...10) == 0 ? int(0...5_000) : int(0...maxPayload)
            return SegmentEntry(key: key, timestamp: i64(-5...2_000_000_000_000), payload: payload(size))
        }
    }

    mutating func block(entries: [SegmentEntry]? = nil) -> ByteBuffer {
        SegmentCodec.encodeBlock(blockNumber: Int32(int(0...1_000)), firstEntryId: i64(0...1_000_000),
                                 entries: entries ?? self.entries(), includeHeader: int(0...1) == 1)
    }
}

/// The outcome of a decoder as something comparable: the info, or the error's text.
enum Outcome: Equatable {
    case info(BlockInfo)
    case failure(String)
}

func outcome(_ body: () throws -> BlockInfo) -> Outcome {
    do { return .info(try body()) } catch { return .failure("\(error)") }
}

func verified(_ b: ByteBuffer) -> Outcome { outcome { try SegmentCodec.verifyBlock(b) } }
func decoded(_ b: ByteBuffer) -> Outcome { outcome { try SegmentCodec.decodeBlock(b).info } }

func isCorrupted(_ b: ByteBuffer) -> Bool {
    do {
        _ = try SegmentCodec.verifyBlock(b)
        return false
    } catch let e as WoodpeckerError {
        return e.code == .corrupted
    } catch {
        return false
    }
}

func truncated(_ b: ByteBuffer, _ n: Int) -> ByteBuffer { ByteBuffer(bytes: Array(b.readableBytesArray[0..<n])) }

func flipped(_ b: ByteBuffer, bit: Int) -> ByteBuffer {
    var a = b.readableBytesArray
    a[bit / 8] ^= UInt8(1 << (bit % 8))
    return ByteBuffer(bytes: a)
}

/// One framed record: CRC32C(type|length|payload) | type | length | payload, little-endian.
func frame(_ type: UInt8, _ payload: [UInt8]) -> [UInt8] {
    var body: [UInt8] = [type]
    withUnsafeBytes(of: UInt32(payload.count).littleEndian) { body += $0 }
    body += payload
    var out: [UInt8] = []
    withUnsafeBytes(of: CRC32C.checksum(body).littleEndian) { out += $0 }
    return out + body
}

func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

func dataRecord(key: Int64, timestamp: Int64, payload: [UInt8] = [1, 2, 3]) -> [UInt8] {
    frame(2, le(key) + le(timestamp) + payload)
}

/// A block with well-formed CRCs whose header says whatever the caller wants about `records`.
func craftedBlock(number: Int32 = 4, first: Int64 = 10, last: Int64, firstKey: Int64, lastKey: Int64, maxTimestamp: Int64,
                  records: [[UInt8]]) -> ByteBuffer {
    let data = records.flatMap { $0 }
    let header = frame(5, le(number) + le(first) + le(last) + le(firstKey) + le(lastKey) + le(maxTimestamp)
        + le(UInt32(data.count)) + le(CRC32C.checksum(data)))
    return ByteBuffer(bytes: header + data)
}

/// Byte ranges of the records of a valid block (header record, block header, data records).
func recordRanges(_ b: ByteBuffer) -> [Range<Int>] {
    let scan = SegmentCodec.decodeRecords(b)
    let starts = scan.records.map(\.offset) + [b.readableBytes]
    return (0..<scan.records.count).map { starts[$0]..<starts[$0 + 1] }
}

@Suite struct VerifyBlockTests {
    @Test func randomBlocksGiveTheSameInfoAsDecodeBlock() throws {
        var g = BlockGen(seed: 11)
        for c in 0..<400 {
            let encoded = g.block()
            let info = try SegmentCodec.verifyBlock(encoded)
            #expect(info == (try SegmentCodec.decodeBlock(encoded).info), "case \(c)")
            #expect(info.size == encoded.readableBytes)
            // The same bytes as a slice in the middle of a larger buffer (reader index not 0).
            var outer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
            outer.writeBuffer(encoded)
            outer.writeBytes([0xDD, 0xEE])
            let slice = try outer.getSlice(at: 3, length: encoded.readableBytes)
            #expect(try SegmentCodec.verifyBlock(slice) == info, "case \(c) as a slice")
        }
    }

    @Test func everyTruncationIsRejectedWithDecodeBlocksError() {
        var g = BlockGen(seed: 12)
        for c in 0..<30 {
            let encoded = g.block(entries: g.entries(count: g.int(1...6), maxPayload: 60))
            for n in 0..<encoded.readableBytes {
                let cut = truncated(encoded, n)
                #expect(isCorrupted(cut), "case \(c) length \(n)")
                #expect(verified(cut) == decoded(cut), "case \(c) length \(n)")
            }
            var longer = encoded
            longer.writeBytes([0])
            #expect(isCorrupted(longer), "case \(c) one extra byte")
            #expect(verified(longer) == decoded(longer))
        }
    }

    @Test func aBitFlipInEachRecordIsRejectedWithDecodeBlocksError() {
        var g = BlockGen(seed: 13)
        // Exhaustive over a few small blocks.
        for c in 0..<3 {
            let encoded = g.block(entries: g.entries(count: 3, maxPayload: 20))
            for bit in 0..<encoded.readableBytes * 8 {
                let bad = flipped(encoded, bit: bit)
                #expect(isCorrupted(bad), "case \(c) bit \(bit)")
                #expect(verified(bad) == decoded(bad), "case \(c) bit \(bit)")
            }
        }
        // Random blocks: one random bit in each record in turn (header record, block header, every data record).
        for c in 0..<150 {
            let encoded = g.block()
            let ranges = recordRanges(encoded)
            #expect(ranges.count >= 2)
            for (j, r) in ranges.enumerated() {
                let bit = g.int((r.lowerBound * 8)...(r.upperBound * 8 - 1))
                let bad = flipped(encoded, bit: bit)
                #expect(isCorrupted(bad), "case \(c) record \(j) bit \(bit)")
                #expect(verified(bad) == decoded(bad), "case \(c) record \(j) bit \(bit)")
            }
        }
    }

    /// Blocks whose every CRC is right but whose content contradicts the header: the same checks as decodeBlock.
    @Test func wellFramedButInconsistentBlocksAreRejectedLikeDecodeBlock() throws {
        let good = craftedBlock(last: 11, firstKey: 5, lastKey: 7, maxTimestamp: 9,
                                records: [dataRecord(key: 5, timestamp: 9), dataRecord(key: 7, timestamp: 1)])
        #expect(verified(good) == decoded(good))
        #expect(try SegmentCodec.verifyBlock(good) == BlockInfo(blockNumber: 4, firstEntryId: 10, lastEntryId: 11, firstKey: 5,
                                                                  lastKey: 7, maxTimestamp: 9, size: good.readableBytes))
        let cases: [(String, ByteBuffer, String)] = [
            ("keys backwards", craftedBlock(last: 11, firstKey: 3, lastKey: 5, maxTimestamp: 1,
                                            records: [dataRecord(key: 5, timestamp: 1), dataRecord(key: 3, timestamp: 1)]),
             "keys go backwards"),
            ("fewer entries than announced", craftedBlock(last: 12, firstKey: 5, lastKey: 7, maxTimestamp: 9,
                                                          records: [dataRecord(key: 5, timestamp: 9, payload: Array(repeating: 0, count: 40)),
                                                                    dataRecord(key: 7, timestamp: 1, payload: Array(repeating: 0, count: 40))]),
             "announces 3 entries, holds 2"),
            ("max timestamp wrong", craftedBlock(last: 11, firstKey: 5, lastKey: 7, maxTimestamp: 8,
                                                 records: [dataRecord(key: 5, timestamp: 9), dataRecord(key: 7, timestamp: 1)]),
             "bounds"),
            ("first key wrong", craftedBlock(last: 11, firstKey: 4, lastKey: 7, maxTimestamp: 9,
                                             records: [dataRecord(key: 5, timestamp: 9), dataRecord(key: 7, timestamp: 1)]),
             "bounds"),
            ("not a data record", craftedBlock(last: 10, firstKey: 5, lastKey: 5, maxTimestamp: 9,
                                               records: [dataRecord(key: 5, timestamp: 9), frame(1, Array(repeating: 0, count: 16))]),
             "expected a data record"),
            ("short data payload", craftedBlock(last: 10, firstKey: 5, lastKey: 5, maxTimestamp: 9,
                                                records: [frame(2, Array(repeating: 0, count: 30)), frame(2, [1, 2, 3])]),
             "expected at least 16"),
        ]
        for (name, block, reason) in cases {
            #expect(isCorrupted(block), "\(name)")
            #expect(verified(block) == decoded(block), "\(name)")
            if case let .failure(message) = verified(block) {
                #expect(message.contains(reason), "\(name): \(message)")
            }
        }
    }

    /// Prints ns per 32 KiB block for the node's old check (decodeBlock(...).info) and verifyBlock; no assertion on
    /// timing (the figures mean something in a release build only).
    @Test func verifyCostPer32KiBBlock() throws {
        for entrySize in [64, 1_024] {
            let count = 32 * 1024 / (entrySize + SegmentCodec.dataRecordOverhead)
            var g = BlockGen(seed: 14)
            let entries = (0..<count).map { i in SegmentEntry(key: Int64(i), timestamp: Int64(i), payload: g.payload(entrySize)) }
            let block = SegmentCodec.encodeBlock(blockNumber: 1, firstEntryId: 0, entries: entries, includeHeader: false)
            let rounds = 2_000
            var sink = 0
            let t0 = Clock.monotonicNanos()
            for _ in 0..<rounds { sink &+= try SegmentCodec.decodeBlock(block).info.size }
            let t1 = Clock.monotonicNanos()
            for _ in 0..<rounds { sink &+= try SegmentCodec.verifyBlock(block).size }
            let t2 = Clock.monotonicNanos()
            #expect(sink == 2 * rounds * block.readableBytes)
            print("block of \(block.readableBytes) bytes, \(count) entries of \(entrySize) bytes: decodeBlock(...).info "
                  + "\((t1 - t0) / UInt64(rounds)) ns, verifyBlock \((t2 - t1) / UInt64(rounds)) ns")
        }
    }
}
