import KafkaProtocol
import Testing
import WoodpeckerCore

/// Byte-exact frames (hand-derived and captured from real clients) and malformed input.
@Suite struct WireFormatTests {
    /// Splits a frame: checks the size prefix, decodes the header, returns the header and the body.
    private func openFrame(_ hex: String) throws -> (RequestHeader, ByteBuffer) {
        var b = ByteBuffer(bytes: hexBytes(hex))
        let size = try b.readInteger(as: Int32.self)
        #expect(Int(size) == b.readableBytes)
        let header = try KafkaHeaders.decodeRequestHeader(from: &b)
        return (header, b)
    }

    @Test func apiVersionsV3RequestAsLibrdkafkaSendsIt() throws {
        // Hand-derived: size 0x24 | api_key 18 | version 3 | correlation 1 | client_id int16 "rdkafka" (classic
        // even in header v2) | header tags 00 | compact "librdkafka" (0x0b = 10+1) | compact "2.0.2" | body tags 00.
        let handDerived = "00000024 0012 0003 00000001 0007 72646b61666b61 00"
            + " 0b 6c696272646b61666b61 06 322e302e32 00"
        #expect(hexBytes(handDerived) == hexBytes(CapturedFrames.kcatApiVersionsV3))

        let (header, body0) = try openFrame(CapturedFrames.kcatApiVersionsV3)
        #expect(header == RequestHeader(requestApiKey: 18, requestApiVersion: 3, correlationId: 1, clientId: "rdkafka"))
        var body = body0
        let req = try ApiVersionsRequest(from: &body, version: 3)
        #expect(req.clientSoftwareName == "librdkafka")
        #expect(req.clientSoftwareVersion == "2.0.2")
        #expect(body.readableBytes == 0)

        let frame = KafkaHeaders.requestFrame(req, version: 3, correlationId: 1, clientId: "rdkafka")
        #expect(frame.readableBytesArray == hexBytes(handDerived))
    }

    @Test func metadataV1Request() throws {
        // size 0x1e | key 3 | version 1 | correlation 3 | "rdkafka" | topics int32 1 | "mytopic".
        let handDerived = "0000001e 0003 0001 00000003 0007 72646b61666b61 00000001 0007 6d79746f706963"
        #expect(hexBytes(handDerived) == hexBytes(CapturedFrames.kcatMetadataV1))
        let (header, body0) = try openFrame(CapturedFrames.kcatMetadataV1)
        #expect(header.requestApiKey == 3 && header.requestApiVersion == 1 && header.correlationId == 3)
        var body = body0
        let req = try MetadataRequest(from: &body, version: 1)
        #expect(req.topics == [.init(name: "mytopic")])
        #expect(body.readableBytes == 0)
        let frame = KafkaHeaders.requestFrame(req, version: 1, correlationId: 3, clientId: "rdkafka")
        #expect(frame.readableBytesArray == hexBytes(handDerived))

        // Null topic array (v1+: all topics) versus empty array.
        var all = ByteBuffer(bytes: hexBytes("ffffffff"))
        #expect(try MetadataRequest(from: &all, version: 1).topics == nil)
        var empty = ByteBuffer(bytes: hexBytes(CapturedFrames.kcatMetadataV1Empty))
        _ = try empty.readInteger(as: Int32.self)
        _ = try KafkaHeaders.decodeRequestHeader(from: &empty)
        #expect(try MetadataRequest(from: &empty, version: 1).topics == [])
    }

    @Test func apiVersionsV3ResponseWithoutTaggedFields() {
        let resp = ApiVersionsResponse(errorCode: 0, apiKeys: [
            .init(apiKey: 0, minVersion: 0, maxVersion: 11), .init(apiKey: 18, minVersion: 0, maxVersion: 4),
        ], throttleTimeMs: 0)
        let frame = KafkaHeaders.responseFrame(resp, correlationId: 7, version: 3)
        // size 0x1a (4 + 2 + 1 + 7 + 7 + 4 + 1 = 26) | correlation 7 (header v0: no tag buffer even at v3) | error 0 | compact array of 2 (03) |
        // [0,0,11,tags] [18,0,4,tags] | throttle 0 | no tagged fields.
        let expected = "0000001a 00000007 0000 03 0000 0000 000b 00 0012 0000 0004 00 00000000 00"
        #expect(frame.readableBytesArray == hexBytes(expected))
    }

    @Test func capturedClientFramesDecodeAndReencodeExactly() throws {
        let cases: [(String, Int16, String, String)] = [
            (CapturedFrames.confluentApiVersionsV3, 3, "confluent-kafka-python", "2.16.1-rdkafka-2.16.0"),
            (CapturedFrames.kafkaPythonApiVersionsV4, 4, "kafka-python", "3.0.12"),
            (CapturedFrames.kcatApiVersionsV0, 0, "", ""),
        ]
        for (hex, version, name, softwareVersion) in cases {
            let (header, body0) = try openFrame(hex)
            #expect(header.requestApiKey == 18 && header.requestApiVersion == version)
            var body = body0
            let req = try ApiVersionsRequest(from: &body, version: version)
            #expect(req.clientSoftwareName == name)
            #expect(req.clientSoftwareVersion == softwareVersion)
            #expect(body.readableBytes == 0)
            let again = KafkaHeaders.requestFrame(req, version: version, correlationId: header.correlationId,
                                                  clientId: header.clientId)
            #expect(again.readableBytesArray == hexBytes(hex))
        }
    }

    // MARK: malformed input

    @Test func negativeAndHugeLengthsThrow() {
        // ProduceRequest v3: transactional_id null, acks -1, timeout 1000, then the topic array count.
        let prefix = "ffff ffff 000003e8"
        for count in ["fffffffe", "80000000", "7fffffff", "00100000"] {
            var b = ByteBuffer(bytes: hexBytes(prefix + count))
            #expect(throws: DecodeError.self) { try ProduceRequest(from: &b, version: 3) }
        }
        // Null (-1) for a non-nullable array.
        var null = ByteBuffer(bytes: hexBytes(prefix + "ffffffff"))
        #expect(throws: DecodeError.self) { try ProduceRequest(from: &null, version: 3) }
        // Flexible (v9): compact array with a huge uvarint count, and a 10-byte overlong varint.
        for count in ["ffffffff0f", "ffffffffffffffffff01", "ffffffffffffffffffff7f"] {
            var b = ByteBuffer(bytes: hexBytes("00 ffff 000003e8" + count))
            #expect(throws: DecodeError.self) { try ProduceRequest(from: &b, version: 9) }
        }
        // Negative string length other than -1, and a string longer than the input.
        var badString = ByteBuffer(bytes: hexBytes("fff0"))
        #expect(throws: DecodeError.self) { try DeleteGroupsRequest(from: &badString, version: 0) }
        var longString = ByteBuffer(bytes: hexBytes("00000001 7fff 41"))
        #expect(throws: DecodeError.self) { try DeleteGroupsRequest(from: &longString, version: 0) }
        // Records with a negative (not -1) size.
        var badRecords = ByteBuffer(bytes: hexBytes(prefix + "00000001 0001 41 00000001 00000000 fffffff0"))
        #expect(throws: DecodeError.self) { try ProduceRequest(from: &badRecords, version: 3) }
        // Tag buffer claiming more fields than bytes.
        var tags = ByteBuffer(bytes: hexBytes("0000 01 00000000 7f 00"))
        #expect(throws: DecodeError.self) { try ApiVersionsResponse(from: &tags, version: 3) }
        // A tagged field whose size exceeds the input.
        var tagSize = ByteBuffer(bytes: hexBytes("0000 01 00000000 01 01 7f 00"))
        #expect(throws: DecodeError.self) { try ApiVersionsResponse(from: &tagSize, version: 3) }
    }

    /// Random bytes and bit-flipped valid encodings, for every codec at every version: decoding either throws
    /// or returns a value; it never traps. Decoded values re-encode without trapping too.
    @Test func fuzzNeverCrashes() {
        var rng = SplitMix(state: 0x5EED)
        var decodedCount = 0
        for type in allCodecTypes {
            decodedCount += fuzz(type, &rng)
        }
        // Some inputs must decode (e.g. headers, bodies of empty-ish messages), proving the fuzz reaches decoders.
        #expect(decodedCount > 0)
    }

    private func fuzz<T: KafkaCodable>(_ type: T.Type, _ rng: inout SplitMix) -> Int {
        var decoded = 0
        let seeds: [[UInt8]] = T.validVersions.map { T.defaultValue.encoded(version: $0).readableBytesArray }
        for v in T.validVersions {
            for _ in 0..<40 {
                var bytes = [UInt8](repeating: 0, count: Int(rng.next() % 64))
                for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
                if Int(v) < seeds.count, rng.next() % 2 == 0 {
                    bytes = seeds[Int(v)] + bytes
                    if !bytes.isEmpty { bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(1 << (rng.next() % 8)) }
                }
                var b = ByteBuffer(bytes: bytes)
                if let value = try? T(from: &b, version: v) {
                    decoded += 1
                    _ = value.encoded(version: v)
                }
            }
        }
        return decoded
    }
}

@Suite struct ApiKeyDescriptionTests {
    /// Regression: `description` interpolated `self`, which recursed until the stack overflowed (SIGSEGV).
    @Test func describesWithoutRecursion() {
        #expect(ApiKey.apiVersions.description == "apiVersions(18)")
        #expect("\(ApiKey.produce)" == "produce(0)")
    }
}
