import WoodpeckerCore

/// A value with a Kafka wire encoding that depends on the API version.
///
/// Decoding never traps on hostile input: every length is checked against the bytes that remain, so a
/// negative or huge count throws `DecodeError` before anything is allocated.
public protocol KafkaCodable: Sendable, Equatable {
    static var validVersions: ClosedRange<Int16> { get }
    static var flexibleVersions: PartialRangeFrom<Int16>? { get }
    /// A value with every field at its JSON default.
    static var defaultValue: Self { get }
    init(from buffer: inout ByteBuffer, version: Int16) throws(DecodeError)
    /// Writes the fields present in `version`. Fields absent from `version` are not written, whatever their value;
    /// a nil value in a version where the field is not nullable is written as empty.
    func encode(to buffer: inout ByteBuffer, version: Int16)
}

/// A Kafka request or response body (generated from the upstream message JSON).
public protocol KafkaMessage: KafkaCodable {
    static var apiKey: Int16 { get }
}

extension KafkaCodable {
    /// True when `version` uses the flexible (KIP-482) encoding.
    public static func isFlexible(_ version: Int16) -> Bool {
        flexibleVersions?.contains(version) ?? false
    }

    /// Encodes into a new buffer.
    public func encoded(version: Int16) -> ByteBuffer {
        var b = ByteBuffer()
        encode(to: &b, version: version)
        return b
    }
}

/// A Kafka UUID (topic IDs, directory IDs): 16 raw bytes on the wire. `.zero` means "unknown".
public struct KafkaUUID: Sendable, Hashable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public static let zero = KafkaUUID(high: 0, low: 0)

    /// A random version-4 UUID.
    public static func random() -> KafkaUUID {
        var g = SystemRandomNumberGenerator()
        let a: UInt64 = g.next()
        let b: UInt64 = g.next()
        let hi = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000
        let lo = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return KafkaUUID(high: hi, low: lo)
    }

    /// The 16 bytes, big-endian.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: high >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: low >> UInt64(shift))) }
        return out
    }

    /// URL-safe base64 without padding, the form Kafka tools print.
    public var description: String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let b = bytes
        var out = [UInt8]()
        var i = 0
        while i < b.count {
            let n = min(3, b.count - i)
            var chunk = UInt32(b[i]) << 16
            if n > 1 { chunk |= UInt32(b[i + 1]) << 8 }
            if n > 2 { chunk |= UInt32(b[i + 2]) }
            for k in 0...n { out.append(alphabet[Int((chunk >> UInt32(18 - 6 * k)) & 63)]) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One entry of a tag buffer: the tag and its raw bytes.
struct TaggedField {
    var tag: UInt64
    var data: ByteBuffer
}

// Wire primitives used by the generated code. `flexible` selects compact (uvarint length) encodings.
extension ByteBuffer {
    // MARK: lengths

    /// Reads a compact (uvarint n+1) or classic (int32/int16) length; nil means null (-1 / 0).
    mutating func kReadLength(_ flexible: Bool, classicInt16: Bool) throws(DecodeError) -> Int? {
        if flexible {
            let raw = try readUnsignedVarint()
            if raw == 0 { return nil }
            guard raw - 1 <= UInt64(Int32.max) else { throw .malformed("compact length \(raw - 1) exceeds int32") }
            return Int(raw - 1)
        }
        let n: Int = classicInt16 ? Int(try readInteger(as: Int16.self)) : Int(try readInteger(as: Int32.self))
        if n == -1 { return nil }
        guard n >= 0 else { throw .malformed("negative length \(n)") }
        return n
    }

    /// Reads an array count; nil means a null array. Throws when the count cannot fit in the remaining bytes.
    mutating func kReadArrayCount(_ flexible: Bool, minElementSize: Int) throws(DecodeError) -> Int? {
        guard let n = try kReadLength(flexible, classicInt16: false) else { return nil }
        guard n <= readableBytes / minElementSize else {
            throw .malformed("array of \(n) elements (at least \(minElementSize) bytes each) exceeds the \(readableBytes) bytes left")
        }
        return n
    }

    mutating func kWriteArrayCount(_ count: Int, _ flexible: Bool) {
        if flexible { writeUnsignedVarint(UInt64(count) + 1) } else { writeInteger(Int32(count)) }
    }

    mutating func kWriteNullArrayCount(_ flexible: Bool) {
        if flexible { writeUnsignedVarint(0) } else { writeInteger(Int32(-1)) }
    }

    // MARK: scalars

    mutating func kReadBool() throws(DecodeError) -> Bool { try readInteger(as: UInt8.self) != 0 }
    mutating func kWriteBool(_ v: Bool) { writeInteger(UInt8(v ? 1 : 0)) }

    mutating func kReadFloat64() throws(DecodeError) -> Double {
        Double(bitPattern: try readInteger(as: UInt64.self))
    }
    mutating func kWriteFloat64(_ v: Double) { writeInteger(v.bitPattern) }

    mutating func kReadUUID() throws(DecodeError) -> KafkaUUID {
        let hi = try readInteger(as: UInt64.self)
        let lo = try readInteger(as: UInt64.self)
        return KafkaUUID(high: hi, low: lo)
    }
    mutating func kWriteUUID(_ v: KafkaUUID) {
        writeInteger(v.high)
        writeInteger(v.low)
    }

    // MARK: strings

    mutating func kReadNullableString(_ flexible: Bool) throws(DecodeError) -> String? {
        guard let n = try kReadLength(flexible, classicInt16: true) else { return nil }
        return try readString(length: n)
    }

    mutating func kReadString(_ flexible: Bool) throws(DecodeError) -> String {
        guard let s = try kReadNullableString(flexible) else { throw .malformed("null in a non-nullable string") }
        return s
    }

    mutating func kWriteString(_ s: String, _ flexible: Bool) {
        let utf8 = s.utf8
        if flexible { writeUnsignedVarint(UInt64(utf8.count) + 1) } else { writeInteger(Int16(truncatingIfNeeded: utf8.count)) }
        writeBytes(utf8)
    }

    mutating func kWriteNullableString(_ s: String?, _ flexible: Bool) {
        if let s { kWriteString(s, flexible) } else if flexible { writeUnsignedVarint(0) } else { writeInteger(Int16(-1)) }
    }

    // MARK: bytes and records

    mutating func kReadNullableBytes(_ flexible: Bool) throws(DecodeError) -> [UInt8]? {
        guard let n = try kReadLength(flexible, classicInt16: false) else { return nil }
        return try readBytes(length: n)
    }

    mutating func kReadBytes(_ flexible: Bool) throws(DecodeError) -> [UInt8] {
        guard let b = try kReadNullableBytes(flexible) else { throw .malformed("null in non-nullable bytes") }
        return b
    }

    mutating func kWriteBytes(_ b: [UInt8], _ flexible: Bool) {
        if flexible { writeUnsignedVarint(UInt64(b.count) + 1) } else { writeInteger(Int32(b.count)) }
        writeBytes(b)
    }

    mutating func kWriteNullableBytes(_ b: [UInt8]?, _ flexible: Bool) {
        if let b { kWriteBytes(b, flexible) } else if flexible { writeUnsignedVarint(0) } else { writeInteger(Int32(-1)) }
    }

    /// Records are kept as a slice sharing the request's storage (no copy).
    mutating func kReadRecords(_ flexible: Bool) throws(DecodeError) -> ByteBuffer? {
        guard let n = try kReadLength(flexible, classicInt16: false) else { return nil }
        return try readSlice(length: n)
    }

    mutating func kWriteRecords(_ r: ByteBuffer?, _ flexible: Bool) {
        guard let r else {
            if flexible { writeUnsignedVarint(0) } else { writeInteger(Int32(-1)) }
            return
        }
        if flexible { writeUnsignedVarint(UInt64(r.readableBytes) + 1) } else { writeInteger(Int32(r.readableBytes)) }
        writeBuffer(r)
    }

    // MARK: tagged fields

    /// Reads the number of entries in a tag buffer (each entry is at least 2 bytes).
    mutating func kReadTagCount() throws(DecodeError) -> Int {
        let n = try readUnsignedVarint()
        guard n <= UInt64(readableBytes / 2) else {
            throw .malformed("tag buffer claims \(n) fields but only \(readableBytes) bytes are left")
        }
        return Int(n)
    }

    mutating func kReadTaggedField() throws(DecodeError) -> TaggedField {
        let tag = try readUnsignedVarint()
        let size = try readUnsignedVarint()
        guard size <= UInt64(readableBytes) else { throw .truncated(needed: Int(clamping: size), available: readableBytes) }
        return TaggedField(tag: tag, data: try readSlice(length: Int(size)))
    }

    /// Skips a whole tag buffer (all tags unknown to this struct).
    mutating func kSkipTaggedFields() throws(DecodeError) {
        let n = try kReadTagCount()
        for _ in 0..<n { _ = try kReadTaggedField() }
    }

    mutating func kWriteTaggedField(tag: UInt64, _ data: ByteBuffer) {
        writeUnsignedVarint(tag)
        writeUnsignedVarint(UInt64(data.readableBytes))
        writeBuffer(data)
    }
}
