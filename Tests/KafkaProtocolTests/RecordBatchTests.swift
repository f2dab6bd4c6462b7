import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct RecordBatchTests {
    static let sampleRecords: [Record] = [
        Record(offsetDelta: 0, timestampDelta: 0, key: Array("k0".utf8), value: Array("hello".utf8)),
        Record(offsetDelta: 1, timestampDelta: 5, key: nil, value: Array(repeating: 7, count: 300),
               headers: [RecordHeader(key: "trace", value: [1, 2]), RecordHeader(key: "null", value: nil)]),
        Record(offsetDelta: 2, timestampDelta: 9, key: [], value: nil),
    ]

    private func sampleBatch(_ codec: CompressionCodec = .none) throws -> RecordBatch {
        try RecordBatch.build(records: Self.sampleRecords, baseTimestamp: 1_700_000_000_000, compression: codec,
                              producerId: 1000, producerEpoch: 0, baseSequence: 0)
    }

    @Test func buildParseValidate() throws {
        let batch = try sampleBatch()
        try batch.validate()
        let h = batch.header
        #expect(h.magic == 2 && h.recordsCount == 3 && h.lastOffsetDelta == 2)
        #expect(h.baseTimestamp == 1_700_000_000_000 && h.maxTimestamp == 1_700_000_000_009)
        #expect(h.producerId == 1000 && h.producerEpoch == 0 && h.baseSequence == 0)
        #expect(h.totalSize == batch.bytes.readableBytes)
        #expect(try batch.records() == Self.sampleRecords)
        // Header parsed back from raw bytes matches.
        #expect(try RecordBatchHeader(parsing: batch.bytes) == h)
    }

    @Test func crcDetectsEveryBitFlip() throws {
        let batch = try sampleBatch()
        let bytes = batch.bytes.readableBytesArray
        // Flip one bit in every CRC-covered byte (attributes .. end).
        for i in RecordBatchHeader.crcStart..<bytes.count {
            var flipped = bytes
            flipped[i] ^= 0x10
            let b = try RecordBatch(bytes: ByteBuffer(bytes: flipped))
            do {
                try b.validate()
                Issue.record("bit flip at byte \(i) not detected")
            } catch {
                #expect(error.kind == .crcMismatch)
                #expect(error.kafkaErrorCode == .corruptMessage)
            }
        }
    }

    @Test func baseOffsetRewriteKeepsCRCValid() throws {
        var batch = try sampleBatch()
        let crc = batch.header.crc
        batch.setBaseOffset(123_456)
        batch.setPartitionLeaderEpoch(3)
        try batch.validate()
        #expect(batch.header.crc == crc)
        let reparsed = try RecordBatchHeader(parsing: batch.bytes)
        #expect(reparsed.baseOffset == 123_456 && reparsed.partitionLeaderEpoch == 3 && reparsed.lastOffset == 123_458)
    }

    @Test func logAppendTimeRewriteRecomputesCRC() throws {
        var batch = try sampleBatch(.lz4)
        let before = batch.header.crc
        batch.setLogAppendTime(1_800_000_000_000)
        try batch.validate()
        let h = try RecordBatchHeader(parsing: batch.bytes)
        #expect(h.isLogAppendTime && h.compression == .lz4)
        #expect(h.maxTimestamp == 1_800_000_000_000 && h.baseTimestamp == 1_700_000_000_000)
        #expect(h.crc != before && h.crc == batch.computeCRC())
    }

    @Test func inconsistentCountsAreInvalidRecord() throws {
        // offset deltas 0, 1, 5: lastOffsetDelta 5 but 3 records.
        var recs = Self.sampleRecords
        recs[2].offsetDelta = 5
        let gap = try RecordBatch.build(records: recs, baseTimestamp: 0)
        #expect(throws: RecordBatchError.self) { try gap.validate() }
        do { try gap.validate() } catch { #expect(error.kafkaErrorCode == .invalidRecord) }

        // Deltas out of order but lastOffsetDelta consistent: 0, 2, 1.
        recs[2].offsetDelta = 1
        recs[1].offsetDelta = 2
        let shuffled = try RecordBatch.build(records: recs, baseTimestamp: 0)
        do {
            try shuffled.validate()
            Issue.record("out-of-order offset deltas accepted")
        } catch {
            #expect(error.kind == .invalidRecords)
        }

        // Empty batch.
        let empty = try RecordBatch.build(records: [], baseTimestamp: 0)
        do {
            try empty.validate()
            Issue.record("empty batch accepted")
        } catch {
            #expect(error.kafkaErrorCode == .invalidRecord)
        }
    }

    /// `validate` checks record framing without copying keys and values; it must accept exactly the batches whose
    /// records decode. Every single-byte change inside the records (with the CRC made right again, so the framing
    /// check is what decides) gets the same verdict from both paths.
    @Test func validateAgreesWithFullDecodingOnCorruptRecords() throws {
        let original = try sampleBatch().bytes.readableBytesArray
        var rejected = 0
        for position in RecordBatchHeader.size..<original.count {
            for value: UInt8 in [0x00, 0x01, 0x7f, 0x80, 0xff, original[position] &+ 1] where value != original[position] {
                var bytes = original
                bytes[position] = value
                var batch = try #require(try RecordBatch.split(ByteBuffer(bytes: bytes)).first)
                let crc = batch.computeCRC()
                withUnsafeBytes(of: crc.bigEndian) { for i in 0..<4 { bytes[17 + i] = $0[i] } }
                batch = try #require(try RecordBatch.split(ByteBuffer(bytes: bytes)).first)
                let decodes: Bool
                do {
                    let recs = try batch.records()
                    decodes = recs.enumerated().allSatisfy { $0.element.offsetDelta == Int32($0.offset) }
                } catch {
                    decodes = false
                }
                let valid = (try? batch.validate()) != nil
                #expect(valid == decodes, "byte \(position) set to \(value): validate \(valid), decoding \(decodes)")
                if !valid { rejected += 1 }
            }
        }
        #expect(rejected > 100, "the corruptions should mostly be caught (\(rejected) were)")
    }

    @Test func wrongMagicAndLengths() throws {
        var bytes = try sampleBatch().bytes.readableBytesArray
        var magic1 = bytes
        magic1[16] = 1
        do {
            _ = try RecordBatch.split(ByteBuffer(bytes: magic1))
            Issue.record("magic 1 accepted")
        } catch {
            #expect(error.kind == .unsupportedMagic && error.kafkaErrorCode == .invalidRecord)
        }
        // batchLength larger than the bytes.
        bytes[8] = 0x7f
        do {
            _ = try RecordBatch.split(ByteBuffer(bytes: bytes))
            Issue.record("oversized batchLength accepted")
        } catch {
            #expect(error.kind == .truncated && error.kafkaErrorCode == .corruptMessage)
        }
        // Truncated header.
        #expect(throws: RecordBatchError.self) { try RecordBatchHeader(parsing: ByteBuffer(bytes: [0, 1, 2])) }
    }

    @Test func splitSeveralBatches() throws {
        var records = ByteBuffer()
        let a = try sampleBatch()
        let b = try sampleBatch(.zstd)
        records.writeBuffer(a.bytes)
        records.writeBuffer(b.bytes)
        let batches = try RecordBatch.split(records)
        #expect(batches.count == 2)
        #expect(batches[0].bytes == a.bytes && batches[1].header.compression == .zstd)
        for batch in batches { try batch.validate() }
        // A partial trailing batch is rejected.
        var partial = records
        partial.writerIndex -= 1
        #expect(throws: RecordBatchError.self) { try RecordBatch.split(partial) }
        #expect(try RecordBatch.split(ByteBuffer()).isEmpty)
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func compressedBatchRoundTrips(_ codec: CompressionCodec) throws {
        let batch = try sampleBatch(codec)
        #expect(batch.header.compression == codec)
        try batch.validate()
        #expect(try batch.records() == Self.sampleRecords)
        // The payload really is compressed (300 repeated bytes shrink).
        #expect(batch.payload.readableBytes < 300)
        // A bound below the decompressed size is refused with a clear error.
        do {
            _ = try batch.records(maxDecompressedBytes: 100)
            Issue.record("\(codec) ignored the decompression bound")
        } catch {
            #expect(error.kind == .compression(.tooLarge))
        }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func codecRoundTripAndCorruption(_ codec: CompressionCodec) throws {
        var rng = SplitMix(state: 42)
        let random = (0..<200_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let text = Array(String(repeating: "woodpecker kafka record ", count: 10_000).utf8)
        for input in [[], [1], random, text] {
            let c = try KafkaCompression.compress(input, codec: codec)
            #expect(try KafkaCompression.decompress(ByteBuffer(bytes: c), codec: codec) == input)
        }
        // Compression bomb: 8 MiB of zeros under a 1 MiB cap.
        let zeros = try KafkaCompression.compress([UInt8](repeating: 0, count: 8 << 20), codec: codec)
        #expect(zeros.count < 1 << 20)
        #expect(throws: CompressionError.self) {
            try KafkaCompression.decompress(ByteBuffer(bytes: zeros), codec: codec, maxOutputBytes: 1 << 20)
        }
        // Garbage is an error, not a crash.
        #expect(throws: CompressionError.self) {
            try KafkaCompression.decompress(ByteBuffer(bytes: [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
                                            codec: codec)
        }
        // Truncated compressed text is an error.
        let t = try KafkaCompression.compress(text, codec: codec)
        #expect(throws: CompressionError.self) {
            try KafkaCompression.decompress(ByteBuffer(bytes: t[0..<t.count / 2]), codec: codec)
        }
    }

    @Test func snappyFramings() throws {
        let text = Array(String(repeating: "snappy ", count: 20_000).utf8)
        let xerial = try KafkaCompression.compress(text, codec: .snappy, snappyFraming: .xerial)
        let raw = try KafkaCompression.compress(text, codec: .snappy, snappyFraming: .raw)
        // xerial header: magic, version 1, compatible version 1; blocks of at most 32 KiB input.
        #expect(Array(xerial[0..<16]) == hexBytes("82534e4150505900 00000001 00000001"))
        #expect(raw[0] != 0x82)
        #expect(try KafkaCompression.decompress(ByteBuffer(bytes: xerial), codec: .snappy) == text)
        #expect(try KafkaCompression.decompress(ByteBuffer(bytes: raw), codec: .snappy) == text)
        // A xerial block length past the end is corrupt.
        var bad = xerial
        bad[16] = 0x7f
        #expect(throws: CompressionError.self) { try KafkaCompression.decompress(ByteBuffer(bytes: bad), codec: .snappy) }
    }

    /// Streams written by foreign encoders decode: Python's gzip, the zstd CLI reading a pipe (no content size
    /// in the frame header, so the streaming path is used), the lz4 CLI frame format.
    @Test func foreignEncodersDecode() throws {
        let text = Array(String(repeating: "kafka ", count: 8).utf8)
        let fixtures: [(CompressionCodec, String)] = [
            (.gzip, "1f8b0800000000000203cb4e4ccb4e54c8269a04003dfdcbdf30000000"),
            (.zstd, "28b52ffd0458650000306b61666b612001000395220fac98c9"),
            (.lz4, "04224d186440a7100000006f6b61666b61200600125061666b612000000000eb966342"),
        ]
        for (codec, hex) in fixtures {
            #expect(try KafkaCompression.decompress(ByteBuffer(bytes: hexBytes(hex)), codec: codec) == text, "\(codec)")
        }
    }

    @Test func hostileRecordPayloadsThrow() throws {
        // Uncompressed batch whose payload is garbage: records() throws INVALID_RECORD, never traps.
        var rng = SplitMix(state: 7)
        for _ in 0..<200 {
            let junk = (0..<Int(rng.next() % 80)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var b = try sampleBatch().bytes.readableBytesArray
            b.removeSubrange(RecordBatchHeader.size...)
            b += junk
            let length = Int32(b.count - RecordBatchHeader.logOverhead)
            b.replaceSubrange(8..<12, with: withUnsafeBytes(of: length.bigEndian, Array.init))
            let batch = try RecordBatch(bytes: ByteBuffer(bytes: b))
            if let recs = try? batch.records() { #expect(recs.count == 3) }
        }
    }
}
