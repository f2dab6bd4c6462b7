import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

/// Deterministic pseudo-random bytes.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    return (0..<count).map { _ in
        x = x &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: x >> 33)
    }
}

func int32Bytes(_ v: Int32) -> [UInt8] {
    var b = ByteBuffer()
    b.writeInteger(v)
    return b.readableBytesArray
}

/// A request frame with a hand-written body after a valid header.
func rawRequest(apiKey: Int16, version: Int16, correlationId: Int32 = 77, body: [UInt8], flexibleHeader: Bool = false) -> [UInt8] {
    var b = ByteBuffer()
    b.writeInteger(apiKey)
    b.writeInteger(version)
    b.writeInteger(correlationId)
    b.writeInteger(Int16(4))
    b.writeBytes(bytes("evil"))
    if flexibleHeader { b.writeUnsignedVarint(0) }
    b.writeBytes(body)
    return int32Bytes(Int32(b.readableBytes)) + b.readableBytesArray
}

@Suite struct BadInputTests {
    enum Expect { case closed, peerMayWait }

    @Test func badInputClosesOnlyTheOffendingConnection() async throws {
        try await withBroker({ $0.maxRequestBytes = 1 << 20 }) { b in
            let steady = try await b.connect()
            try await steady.createTopic("corpus", partitions: 2)
            let stored = makeBatch(count: 4, prefix: "keep")
            _ = try await steady.produce("corpus", stored.bytes)
            _ = try await steady.produce("corpus", partition: 1, makeBatch(count: 1).bytes)

            var hugeFlexible = ByteBuffer()  // Produce v9 body: null txn id, acks, timeout, topic count 2^31
            hugeFlexible.writeUnsignedVarint(0)
            hugeFlexible.writeInteger(Int16(-1))
            hugeFlexible.writeInteger(Int32(1000))
            hugeFlexible.writeUnsignedVarint(UInt64(Int32.max))
            var hugeClassic = ByteBuffer()  // Produce v7 body: null txn id, acks, timeout, topics int32 count max
            hugeClassic.writeInteger(Int16(-1))
            hugeClassic.writeInteger(Int16(-1))
            hugeClassic.writeInteger(Int32(1000))
            hugeClassic.writeInteger(Int32.max)
            var hugePartitions = ByteBuffer()  // one topic, partition count 2^30, few bytes
            hugePartitions.writeInteger(Int16(-1))
            hugePartitions.writeInteger(Int16(1))
            hugePartitions.writeInteger(Int32(1000))
            hugePartitions.writeInteger(Int32(1))
            hugePartitions.writeInteger(Int16(6))
            hugePartitions.writeBytes(bytes("corpus"))
            hugePartitions.writeInteger(Int32(1 << 30))
            hugePartitions.writeInteger(Int32(0))
            var hugeRecords = ByteBuffer()  // records length far beyond the frame
            hugeRecords.writeInteger(Int16(-1))
            hugeRecords.writeInteger(Int16(1))
            hugeRecords.writeInteger(Int32(1000))
            hugeRecords.writeInteger(Int32(1))
            hugeRecords.writeInteger(Int16(6))
            hugeRecords.writeBytes(bytes("corpus"))
            hugeRecords.writeInteger(Int32(1))
            hugeRecords.writeInteger(Int32(0))
            hugeRecords.writeInteger(Int32(0x7fff_0000))
            hugeRecords.writeBytes(randomBytes(100, seed: 3))

            let cases: [(String, [UInt8], Expect)] = [
                ("negative size prefix", int32Bytes(-5) + randomBytes(20, seed: 1), .closed),
                ("size prefix above max request bytes", int32Bytes(2 << 20) + randomBytes(100, seed: 2), .closed),
                ("size prefix smaller than a header", int32Bytes(3) + [0, 3, 0], .closed),
                ("unknown API key", rawRequest(apiKey: 999, version: 0, body: []), .closed),
                ("unknown API key in the Kafka range", rawRequest(apiKey: 57, version: 0, body: []), .closed),
                ("Metadata version above max", rawRequest(apiKey: 3, version: 40, body: [0, 0], flexibleHeader: true), .closed),
                ("Fetch version below min", rawRequest(apiKey: 1, version: 3, body: randomBytes(40, seed: 4)), .closed),
                ("garbage header: client id longer than frame", int32Bytes(10) + [0, 3, 0, 1, 0, 0, 0, 9, 0x7f, 0xff], .closed),
                ("garbage header: frame ends inside header", int32Bytes(8) + [0, 18, 0, 3, 0, 0, 0, 1], .closed),
                ("Produce v9 topic count 2^31", rawRequest(apiKey: 0, version: 9, body: hugeFlexible.readableBytesArray, flexibleHeader: true), .closed),
                ("Produce v7 topic count int32 max", rawRequest(apiKey: 0, version: 7, body: hugeClassic.readableBytesArray), .closed),
                ("Produce v7 partition count 2^30", rawRequest(apiKey: 0, version: 7, body: hugePartitions.readableBytesArray), .closed),
                ("Produce v7 records length beyond frame", rawRequest(apiKey: 0, version: 7, body: hugeRecords.readableBytesArray), .closed),
                ("Metadata v1 with truncated body", rawRequest(apiKey: 3, version: 1, body: [0, 0, 0, 5, 0, 3]), .closed),
                ("random framed bytes", int32Bytes(4_000) + randomBytes(4_000, seed: 5), .closed),
                ("random framed bytes 2", int32Bytes(600) + randomBytes(600, seed: 6), .closed),
                ("truncated frame then close", int32Bytes(100) + randomBytes(20, seed: 7), .peerMayWait),
                ("random unframed bytes", randomBytes(3_000, seed: 8), .peerMayWait),
            ]
            for (name, payload, expect) in cases {
                let bad = try await b.connect()
                try await bad.sendRaw(payload)
                switch expect {
                case .closed:
                    #expect(await bad.closedByPeer(withinMs: 5_000), "\(name): the broker should close the connection")
                case .peerMayWait:
                    _ = await bad.closedByPeer(withinMs: 300)
                }
                // The other connection keeps working and the data is unchanged.
                let f = try await steady.fetch("corpus", offset: 0)
                #expect(f.errorCode == 0, "\(name)")
                #expect(f.highWatermark == 4, "\(name)")
                #expect(try batches(f.records).map(withoutBaseOffset) == [withoutBaseOffset(stored)], "\(name)")
                #expect(try await steady.highWatermark("corpus", partition: 1) == 1, "\(name)")
            }
            // A fresh connection works too.
            let late = try await b.connect()
            let api = try await late.call(ApiVersionsRequest(), version: 3, ApiVersionsResponse.self)
            #expect(api.errorCode == 0)
            await late.close()
            await steady.close()
        }
    }

    @Test func requestsBeforeABadFrameAreStillAnswered() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("order")
            var frames = KafkaHeaders.requestFrame(ApiVersionsRequest(), version: 2, correlationId: 1, clientId: "x")
                .readableBytesArray
            frames += KafkaHeaders.requestFrame(produceRequest(topic: "order", records: makeBatch(count: 1).bytes), version: 9,
                                                correlationId: 2, clientId: "x").readableBytesArray
            frames += rawRequest(apiKey: 999, version: 0, body: [])
            try await c.sendRaw(frames)
            _ = try await c.read(ApiVersionsResponse.self, version: 2, correlationId: 1)
            let p = try await c.read(ProduceResponse.self, version: 9, correlationId: 2)
            #expect(p.responses.first?.partitionResponses.first?.errorCode == 0)
            #expect(await c.closedByPeer(withinMs: 5_000))
        }
    }
}
