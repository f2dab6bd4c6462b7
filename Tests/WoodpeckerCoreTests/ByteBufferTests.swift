import Testing
import WoodpeckerCore

@Suite struct ByteBufferTests {
    @Test func integersRoundTripBothEndians() throws {
        var b = ByteBuffer()
        b.writeInteger(UInt16(0x0102))
        b.writeInteger(Int32(-2), endianness: .little)
        b.writeInteger(Int64.min)
        #expect(b.readableBytesArray.prefix(2) == [0x01, 0x02])
        #expect(try b.readInteger(as: UInt16.self) == 0x0102)
        #expect(try b.readInteger(endianness: .little, as: Int32.self) == -2)
        #expect(try b.readInteger(as: Int64.self) == .min)
        #expect(b.readableBytes == 0)
        #expect(throws: DecodeError.self) { try b.readInteger(as: UInt8.self) }
    }

    @Test func varintsMatchKafkaEncoding() throws {
        var b = ByteBuffer()
        b.writeUnsignedVarint(300)
        #expect(b.readableBytesArray == [0xAC, 0x02])
        b = ByteBuffer()
        b.writeVarint(-1)
        #expect(b.readableBytesArray == [0x01])
        for v: Int64 in [0, 1, -1, 63, -64, 64, Int64(Int32.max), Int64(Int32.min), .max, .min] {
            var w = ByteBuffer()
            w.writeVarint(v)
            #expect(try w.readVarint() == v)
        }
    }

    @Test func overlongVarintIsMalformedNotACrash() {
        var b = ByteBuffer(bytes: [UInt8](repeating: 0xFF, count: 11))
        #expect(throws: DecodeError.self) { try b.readUnsignedVarint() }
        var t = ByteBuffer(bytes: [0x80])
        #expect(throws: DecodeError.truncated(needed: 1, available: 0)) { try t.readUnsignedVarint() }
    }

    @Test func slicesShareAndStayIndependent() throws {
        var b = ByteBuffer(string: "hello world")
        var s = try b.readSlice(length: 5)
        #expect(s == ByteBuffer(string: "hello"))
        s.writeString("!")  // writing to a slice must not change the parent
        #expect(s == ByteBuffer(string: "hello!"))
        #expect(try b.readString(length: 6) == " world")
        #expect(throws: DecodeError.self) { try b.getSlice(at: b.readerIndex, length: 1) }
    }

    @Test func setIntegerBackpatches() throws {
        var b = ByteBuffer()
        let at = b.reserveBytes(4)
        b.writeString("abc")
        b.setInteger(UInt32(3), at: at)
        #expect(try b.readInteger(as: UInt32.self) == 3)
    }
}

@Suite struct RetainableTests {
    /// A slice that fills most of its storage is kept as it is; a small slice of a large buffer is copied, so keeping
    /// it does not keep the large buffer alive; either way the bytes are the same.
    @Test func retainableKeepsLargeSlicesAndCopiesSmallOnes() throws {
        let whole = ByteBuffer(bytes: patternBytes(100_000))
        let large = try whole.getSlice(at: 10, length: 90_000)
        let small = try whole.getSlice(at: 500, length: 1_000)
        let keptLarge = large.retainable()
        let keptSmall = small.retainable()
        #expect(keptLarge == large && keptSmall == small)
        #expect(keptLarge.storageCapacity == whole.storageCapacity)
        let sameStorage = keptLarge.withUnsafeReadableBytes { k in large.withUnsafeReadableBytes { k.baseAddress == $0.baseAddress } }
        #expect(sameStorage, "a large slice is not copied")
        #expect(keptSmall.storageCapacity < 2_000, "a small slice is copied into storage of its own")
    }

    private func patternBytes(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) } }
}

@Suite struct CRCTests {
    @Test func crc32cKnownAnswer() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.isHardwareAccelerated)  // this machine has SSE4.2
    }

    @Test func crc32cChainsAndMatchesAcrossLengths() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<4099).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let whole = CRC32C.checksum(data)
        let chained = CRC32C.checksum(Array(data[1000...]), seed: CRC32C.checksum(Array(data[..<1000])))
        #expect(whole == chained)
    }

    /// Joining two checksums with B's length gives the checksum of A followed by B, for every split of inputs
    /// from empty to beyond the hardware path's stretch sizes.
    @Test func crc32cCombineEqualsTheChecksumOfTheConcatenation() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var cases: [(Int, Int)] = [(0, 0), (0, 1), (1, 0), (5, 9), (100, 2048), (0, 200_000), (200_000, 0)]
        for _ in 0..<300 {
            let a = Int.random(in: 0...data.count, using: &rng)
            cases.append((a, Int.random(in: 0...(data.count - a), using: &rng)))
        }
        data.withUnsafeBytes { all in
            for (a, b) in cases {
                let first = UnsafeRawBufferPointer(rebasing: all[0..<a])
                let second = UnsafeRawBufferPointer(rebasing: all[a..<(a + b)])
                let joined = CRC32C.combine(CRC32C.checksum(first), CRC32C.checksum(second), length: b)
                #expect(joined == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[0..<(a + b)])), "split \(a) + \(b)")
            }
        }
    }

    /// The hardware path splits long inputs into three interleaved stretches (8 KiB, then 256 B) joined by shift
    /// tables; every length around those thresholds, at every alignment, must equal the bytewise software CRC.
    @Test func crc32cHardwareMatchesTheSoftwareReference() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<(3 * 8192 * 2 + 1000)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var lengths = Array(0..<80) + [767, 768, 769, 775, 776, 1536, 24_575, 24_576, 24_577, 24_576 + 768, 49_152]
        for _ in 0..<200 { lengths.append(Int.random(in: 0...(data.count - 8), using: &rng)) }
        data.withUnsafeBytes { all in
            for length in lengths {
                for offset in 0..<8 where offset + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let seed = UInt32.random(in: 0...UInt32.max, using: &rng)
                    let hw = CRC32C.checksum(slice, seed: seed)
                    let sw = CRC32C.portableChecksum(slice, seed: seed)
                    if hw != sw { Issue.record("length \(length) offset \(offset): hardware \(hw), software \(sw)") }
                }
            }
        }
    }

    @Test func crc32IeeeKnownAnswer() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }
}
