import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct RecordValidationTests {
    /// A batch with bytes patched at `offset` and (optionally) its CRC recomputed.
    func patched(_ batch: RecordBatch, at offset: Int, _ value: Int32, fixCRC: Bool) -> ByteBuffer {
        var b = batch.bytes
        b.setInteger(value, at: b.readerIndex + offset)
        if fixCRC {
            let region = try! b.getSlice(at: b.readerIndex + 21, length: b.readableBytes - 21)
            b.setInteger(CRC32C.checksum(region), at: b.readerIndex + 17)
        }
        return b
    }

    @Test func badCRCIsCorruptMessageAndNothingIsStored() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("crc")
            _ = try await c.produce("crc", makeBatch(count: 2).bytes)
            var bad = makeBatch(count: 3, prefix: "bad").bytes
            let at = bad.readerIndex + bad.readableBytes - 3
            bad.setInteger(UInt8(truncatingIfNeeded: (try bad.getInteger(at: at, as: UInt8.self)) ^ 0xff), at: at)
            let r = try await c.produce("crc", bad)
            #expect(r.errorCode == KafkaErrorCode.corruptMessage.rawValue)
            #expect(r.errorMessage != nil)
            #expect(try await c.highWatermark("crc") == 2)
            // Truncated batch: also corrupt.
            let full = makeBatch(count: 3).bytes
            let short = try full.getSlice(at: full.readerIndex, length: full.readableBytes - 5)
            #expect(try await c.produce("crc", short).errorCode == KafkaErrorCode.corruptMessage.rawValue)
            #expect(try await c.highWatermark("crc") == 2)
            let f = try await c.fetch("crc", offset: 0)
            #expect(try batches(f.records).count == 1)
            await c.close()
        }
    }

    /// Two batches for one partition in one request: INVALID_RECORD, as Kafka, and neither is written (before, the
    /// first could be written while the second failed, and the client's retry of both duplicated the first).
    @Test func twoBatchesForOnePartitionAreInvalidRecordAndNothingIsStored() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("two")
            var both = makeBatch(count: 2, prefix: "a").bytes
            both.writeBuffer(makeBatch(count: 3, prefix: "b").bytes)
            let r = try await c.produce("two", both)
            #expect(r.errorCode == KafkaErrorCode.invalidRecord.rawValue)
            #expect(r.errorMessage?.contains("exactly one record batch") == true)
            #expect(try await c.highWatermark("two") == 0)
            #expect(try await c.produce("two", makeBatch(count: 2).bytes).errorCode == 0)
            #expect(try await c.highWatermark("two") == 2)
            await c.close()
        }
    }

    @Test func wrongRecordCountIsInvalidRecord() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("count")
            let batch = makeBatch(count: 5)
            // recordsCount 6 with lastOffsetDelta 4: inconsistent header.
            let r1 = try await c.produce("count", patched(batch, at: 57, 6, fixCRC: true))
            #expect(r1.errorCode == KafkaErrorCode.invalidRecord.rawValue)
            // recordsCount 6 and lastOffsetDelta 5, but only five records present.
            var b2 = patched(batch, at: 57, 6, fixCRC: false)
            b2.setInteger(Int32(5), at: b2.readerIndex + 23)
            let region = try b2.getSlice(at: b2.readerIndex + 21, length: b2.readableBytes - 21)
            b2.setInteger(CRC32C.checksum(region), at: b2.readerIndex + 17)
            let r2 = try await c.produce("count", b2)
            #expect(r2.errorCode == KafkaErrorCode.invalidRecord.rawValue)
            // recordsCount 0.
            let r3 = try await c.produce("count", patched(batch, at: 57, 0, fixCRC: true))
            #expect(r3.errorCode == KafkaErrorCode.invalidRecord.rawValue)
            #expect(try await c.highWatermark("count") == 0)
            await c.close()
        }
    }

    @Test func batchAboveMaxMessageBytesIsTooLarge() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("small", configs: ["max.message.bytes": "2000"])
            let ok = try await c.produce("small", makeBatch(count: 2, valueSize: 100).bytes)
            #expect(ok.errorCode == 0)
            let big = try await c.produce("small", makeBatch(count: 5, valueSize: 1_000).bytes)
            #expect(big.errorCode == KafkaErrorCode.messageTooLarge.rawValue)
            #expect(try await c.highWatermark("small") == 2)
            await c.close()
        }
    }

    @Test func produceV2IsUnsupportedInEveryPartition() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("old", partitions: 2)
            var req = ProduceRequest(transactionalId: nil, acks: -1, timeoutMs: 30_000, topicData: [])
            req.topicData = [
                .init(name: "old", partitionData: [.init(index: 0, records: makeBatch(count: 1).bytes),
                                                   .init(index: 1, records: makeBatch(count: 1).bytes)]),
                .init(name: "missing", partitionData: [.init(index: 0, records: makeBatch(count: 1).bytes)]),
            ]
            for v: Int16 in [0, 1, 2] {
                let r = try await c.call(req, version: v, ProduceResponse.self)
                #expect(r.responses.map(\.name) == ["old", "missing"])
                let codes = r.responses.flatMap { $0.partitionResponses.map(\.errorCode) }
                #expect(codes == [35, 35, 35], "Produce v\(v)")
            }
            #expect(try await c.highWatermark("old") == 0)
            await c.close()
        }
    }

    @Test func logAppendTimeTopicRewritesTimestampAndCRC() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("lat", configs: ["message.timestamp.type": "LogAppendTime"])
            let batch = makeBatch(count: 3, baseTimestamp: 1_000)
            let before = Clock.wallMillis()
            let r = try await c.produce("lat", batch.bytes)
            let after = Clock.wallMillis()
            #expect(r.errorCode == 0)
            #expect(r.logAppendTimeMs >= before && r.logAppendTimeMs <= after)
            let got = try #require(try batches(try await c.fetch("lat", offset: 0).records).first)
            #expect(got.header.attributes & 0x08 != 0)
            #expect(got.header.isLogAppendTime)
            #expect(got.header.maxTimestamp == r.logAppendTimeMs)
            #expect(got.header.baseTimestamp == 1_000)
            #expect(throws: Never.self) { try got.validate() }
            #expect(try got.records() == batch.records())
            // A CreateTime topic keeps the producer's timestamps.
            try await c.createTopic("ct")
            let r2 = try await c.produce("ct", batch.bytes)
            #expect(r2.logAppendTimeMs == -1)
            let got2 = try #require(try batches(try await c.fetch("ct", offset: 0).records).first)
            #expect(withoutBaseOffset(got2) == withoutBaseOffset(batch))
            await c.close()
        }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func compressedBatchesAreServedBackByteIdentical(codec: CompressionCodec) async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("z")
            let produced = [makeBatch(count: 10, prefix: "c1", compression: codec, valueSize: 200),
                            makeBatch(count: 7, prefix: "c2", compression: codec, valueSize: 50)]
            #expect(produced[0].header.compression == codec)
            for (i, p) in produced.enumerated() {
                let r = try await c.produce("z", p.bytes)
                #expect(r.errorCode == 0)
                #expect(r.baseOffset == (i == 0 ? 0 : 10))
            }
            let got = try batches(try await c.fetch("z", offset: 3).records)
            #expect(got.map(\.header.baseOffset) == [0, 10])
            #expect(got.map(withoutBaseOffset) == produced.map(withoutBaseOffset))
            #expect(try got[1].records() == produced[1].records())
            #expect(try await c.highWatermark("z") == 17)
            await c.close()
        }
    }

    @Test func corruptCompressedPayloadIsRejected() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("zc")
            // A gzip batch whose payload is not gzip, with a valid CRC.
            let plain = makeBatch(count: 3)
            var bytes = plain.bytes
            bytes.setInteger(Int16(CompressionCodec.gzip.rawValue), at: bytes.readerIndex + 21)
            let region = try bytes.getSlice(at: bytes.readerIndex + 21, length: bytes.readableBytes - 21)
            bytes.setInteger(CRC32C.checksum(region), at: bytes.readerIndex + 17)
            let r = try await c.produce("zc", bytes)
            #expect(r.errorCode == KafkaErrorCode.corruptMessage.rawValue)
            // A compressed batch whose header claims more records than it holds.
            let z = makeBatch(count: 4, compression: .zstd)
            var lying = z.bytes
            lying.setInteger(Int32(5), at: lying.readerIndex + 57)
            lying.setInteger(Int32(4), at: lying.readerIndex + 23)
            let region2 = try lying.getSlice(at: lying.readerIndex + 21, length: lying.readableBytes - 21)
            lying.setInteger(CRC32C.checksum(region2), at: lying.readerIndex + 17)
            #expect(try await c.produce("zc", lying).errorCode == KafkaErrorCode.invalidRecord.rawValue)
            #expect(try await c.highWatermark("zc") == 0)
            await c.close()
        }
    }
}
