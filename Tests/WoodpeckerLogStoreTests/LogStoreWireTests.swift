import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerStorage
@testable import WoodpeckerLogStore

/// A valid segment block `n` holding `count` entries of `payloadBytes` each.
func makeBlock(_ n: Int32, firstEntryId: Int64 = 0, count: Int = 3, payloadBytes: Int = 100, fill: UInt8 = 7) -> ByteBuffer {
    let entries = (0..<count).map { i in
        SegmentEntry(key: Int64(i), timestamp: 1_000 + Int64(i),
                     payload: ByteBuffer(bytes: [UInt8](repeating: fill &+ UInt8(truncatingIfNeeded: i), count: payloadBytes)))
    }
    return SegmentCodec.encodeBlock(blockNumber: n, firstEntryId: firstEntryId, entries: entries, includeHeader: false)
}

struct SeededRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 11
    }
}

@Suite struct LogStoreWireTests {
    static let ref = SegmentRef(objectPrefix: "wal/", logId: 42, segmentId: 7)

    static let requests: [LogStoreRequest] = [
        .append(ref, block: 3, bytes: makeBlock(3), confirmedThrough: 2, durableThrough: 1, uploader: true),
        .append(ref, block: 0, bytes: makeBlock(0), confirmedThrough: -1, durableThrough: -1, uploader: false),
        .updateConfirmed(ref, through: 9, durableThrough: 6, uploader: true),
        .updateConfirmed(ref, through: 9, durableThrough: -1, uploader: false),
        .fence(ref),
        .status(SegmentRef(objectPrefix: "", logId: -1, segmentId: Int64.max)),
        .readBlock(ref, number: 5),
        .complete(ref, lastBlock: 11),
        .health,
    ]

    @Test func everyRequestRoundTrips() throws {
        for (i, r) in Self.requests.enumerated() {
            var wire = LogStoreWire.encodeRequest(r, requestId: UInt64(100 + i))
            let frame = try #require(try LogStoreWire.nextFrame(&wire))
            #expect(wire.readableBytes == 0)
            #expect(frame.requestId == UInt64(100 + i))
            #expect(frame.version == LogStoreWire.protocolVersion)
            #expect(try LogStoreWire.decodeRequest(frame) == r)
        }
    }

    /// The parts of a request, written back to back, are exactly its frame; an append's block is its own part,
    /// the caller's buffer as it is.
    @Test func requestPartsAreTheFrame() throws {
        for (i, r) in Self.requests.enumerated() {
            let parts = LogStoreWire.encodeRequestParts(r, requestId: UInt64(i))
            var joined = ByteBuffer()
            for p in parts { joined.writeBuffer(p) }
            #expect(joined == LogStoreWire.encodeRequest(r, requestId: UInt64(i)))
            var wire = joined
            let frame = try #require(try LogStoreWire.nextFrame(&wire))
            #expect(wire.readableBytes == 0)
            #expect(try LogStoreWire.decodeRequest(frame) == r)
            if case let .append(_, _, bytes, _, _, _) = r {
                #expect(parts.count == 2)
                #expect(parts.last == bytes)
            } else {
                #expect(parts.count == 1)
            }
        }
    }

    static let status = SegmentStatus(known: true, fenced: true,
                                      blocks: [HeldBlock(blockNumber: 4, firstEntryId: 10, lastEntryId: 12, size: 321)],
                                      uploadedThrough: 3, confirmedThrough: 4)
    static let responses: [(LogStoreOpcode, Result<LogStoreResult, WoodpeckerError>)] = [
        (.append, .success(.uploaded(through: 5))),
        (.append, .success(.uploaded(through: -1))),
        (.updateConfirmed, .success(.uploaded(through: 8))),
        (.complete, .success(.done)),
        (.fence, .success(.status(status))),
        (.status, .success(.status(SegmentStatus(known: false, fenced: false, blocks: [], uploadedThrough: -1, confirmedThrough: -1)))),
        (.readBlock, .success(.block(makeBlock(1)))),
        (.readBlock, .success(.block(nil))),
        (.health, .success(.health(NodeHealth(incarnation: 99, bufferedBytes: 1234, maxBufferedBytes: 1 << 28, segments: 3,
                                              uploadedBlocks: 77, hasDataDirectory: true)))),
        (.append, .failure(WoodpeckerError(.segmentFenced, "fenced here"))),
        (.health, .failure(WoodpeckerError(.bufferFull, "full", retryable: true))),
        (.fence, .failure(WoodpeckerError(.unsupportedVersion, "v2"))),
    ]

    @Test func everyResponseRoundTrips() throws {
        for (i, (op, result)) in Self.responses.enumerated() {
            var wire = LogStoreWire.encodeResponse(opcode: op.rawValue, requestId: UInt64(i), result)
            let frame = try #require(try LogStoreWire.nextFrame(&wire))
            #expect(frame.opcode == op.rawValue)
            #expect(try LogStoreWire.decodeResponse(frame) == result)
        }
    }

    /// Every prefix of a valid frame is incomplete (nil, bytes left in place); every frame whose length field is
    /// shrunk to cut its body short decodes to an error, never a trap.
    @Test func everyTruncationIsIncompleteOrMalformed() throws {
        var frames: [ByteBuffer] = Self.requests.enumerated().map { LogStoreWire.encodeRequest($1, requestId: UInt64($0)) }
        frames += Self.responses.map { LogStoreWire.encodeResponse(opcode: $0.rawValue, requestId: 1, $1) }
        for (index, full) in frames.enumerated() {
            let bytes = full.readableBytesArray
            for cut in 0..<bytes.count {
                var prefix = ByteBuffer(bytes: bytes[0..<cut])
                #expect(try LogStoreWire.nextFrame(&prefix) == nil)
                #expect(prefix.readableBytes == cut)
            }
            // Body cut short, length field consistent with the cut.
            let isRequest = index < Self.requests.count
            for cut in (4 + LogStoreWire.headerBytes)..<bytes.count {
                var shortened = ByteBuffer(bytes: bytes[0..<cut])
                shortened.setInteger(UInt32(cut - 4), at: 0)
                let frame = try #require(try LogStoreWire.nextFrame(&shortened))
                if isRequest {
                    #expect(throws: WoodpeckerError.self) { try LogStoreWire.decodeRequest(frame) }
                } else {
                    #expect(throws: WoodpeckerError.self) { try LogStoreWire.decodeResponse(frame) }
                }
            }
        }
    }

    @Test func randomBytesNeverTrap() {
        var rng = SeededRandom(state: 0x5eed)
        var framesSeen = 0
        for _ in 0..<4_000 {
            let count = Int(rng.next() % 96)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Half the time, a plausible header so bodies get exercised too.
            if count >= 16 && rng.next() % 2 == 0 {
                let len = UInt32(count - 4)
                bytes[0...3] = [UInt8(len >> 24), UInt8((len >> 16) & 0xff), UInt8((len >> 8) & 0xff), UInt8(len & 0xff)]
                bytes[4...5] = [0, 1]
                bytes[6...7] = [0, UInt8(1 + rng.next() % 7)]
            }
            var buffer = ByteBuffer(bytes: bytes)
            guard let frame = try? LogStoreWire.nextFrame(&buffer, maxFrameBytes: 1 << 20) else { continue }
            framesSeen += 1
            _ = try? LogStoreWire.decodeRequest(frame)
            _ = try? LogStoreWire.decodeResponse(frame)
        }
        #expect(framesSeen > 500)
    }

    @Test func oversizedAndUndersizedLengthsAreRejected() {
        var big = ByteBuffer()
        big.writeInteger(UInt32(Limits.maxRequestSizeBytes + 1))
        big.writeInteger(UInt16(1))
        #expect(throws: WoodpeckerError.self) { try LogStoreWire.nextFrame(&big) }
        var small = ByteBuffer()
        small.writeInteger(UInt32(3))
        small.writeBytes([1, 2, 3])
        #expect(throws: WoodpeckerError.self) { try LogStoreWire.nextFrame(&small) }
    }

    @Test func otherProtocolVersionIsReportedAsUnsupported() throws {
        for version in [LogStoreWire.protocolVersion - 1, LogStoreWire.protocolVersion + 1] {
            var wire = LogStoreWire.frame(opcode: LogStoreOpcode.health.rawValue, requestId: 5, version: version) { _ in }
            let frame = try #require(try LogStoreWire.nextFrame(&wire))
            do {
                _ = try LogStoreWire.decodeRequest(frame)
                Issue.record("version \(version) was accepted")
            } catch {
                #expect(error.code == .unsupportedVersion)
            }
        }
    }

    @Test func segmentFileRecordsRoundTripAndTornTailIsCut() {
        let records: [SegmentFileRecord] = [.header(Self.ref), .block(0, confirmedThrough: -1, bytes: makeBlock(0)),
                                            .fence, .uploaded(0), .completed(3)]
        let bytes = SegmentFiles.encode(records)
        let decoded = SegmentFiles.decode(bytes)
        #expect(decoded.records == records)
        #expect(decoded.validBytes == bytes.readableBytes)
        let all = bytes.readableBytesArray
        let lastStart = SegmentFiles.encode(Array(records.dropLast())).readableBytes
        for cut in lastStart..<all.count {
            let torn = SegmentFiles.decode(ByteBuffer(bytes: all[0..<cut]))
            #expect(torn.records == Array(records.dropLast()))
            #expect(torn.validBytes == lastStart)
        }
    }

    /// Block records are written without copying the block: a small head buffer, then the block buffer itself, with
    /// the record CRC carried over it. The file holds exactly what `encode` makes, and replays.
    @Test func blockRecordsAreWrittenAsHeadAndBlockPartsThatReplay() throws {
        let blocks = (0..<40).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, payloadBytes: 700 + $0) }
        var records: [SegmentFileRecord] = [.header(Self.ref)]
        for (n, b) in blocks.enumerated() { records.append(.block(Int32(n), confirmedThrough: Int32(n) - 1, bytes: b)) }
        records += [.uploaded(5), .fence]
        var parts: [ByteBuffer] = []
        SegmentFiles.encodeParts(records, into: &parts)
        // Each block is its own part, the very buffer passed in (its storage shared, not copied).
        for b in blocks {
            #expect(parts.contains { $0 == b && $0.readerIndex == b.readerIndex && $0.writerIndex == b.writerIndex })
        }
        let dir = try temporaryDirectory()
        let path = dir + "/parts.seg"
        // More parts than one writev takes (IOV_MAX is 1024): the writes continue in order.
        let many = Array(repeating: parts, count: 15).flatMap { $0 }
        try SegmentFiles.append(path, many, sync: false)
        let written = ByteBuffer(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        let expected = SegmentFiles.encode(records)
        #expect(written.readableBytes == expected.readableBytes * 15)
        #expect(try written.getSlice(at: written.readerIndex, length: expected.readableBytes) == expected)
        #expect(SegmentFiles.decode(expected).records == records)
    }
}
