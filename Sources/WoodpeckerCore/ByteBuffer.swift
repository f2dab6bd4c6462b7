#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A growable byte buffer with a reader and a writer index.
///
/// Storage is a copy-on-write `[UInt8]`: copying a buffer or taking a slice (`readSlice`, `getSlice`) shares the
/// storage and copies no bytes until one side writes. Every read is bounds-checked and throws
/// `DecodeError.truncated` instead of trapping, so decoders can run on untrusted input.
public struct ByteBuffer: Sendable, Hashable, CustomStringConvertible {
    @usableFromInline var storage: [UInt8]
    /// Index of the next byte to read (absolute, into storage).
    public var readerIndex: Int
    /// Index one past the last written byte (absolute, into storage).
    public var writerIndex: Int

    public init() {
        storage = []
        readerIndex = 0
        writerIndex = 0
    }

    public init(capacity: Int) {
        storage = []
        storage.reserveCapacity(capacity)
        readerIndex = 0
        writerIndex = 0
    }

    public init(bytes: some Sequence<UInt8>) {
        storage = Array(bytes)
        readerIndex = 0
        writerIndex = storage.count
    }

    public init(string: String) {
        self.init(bytes: Array(string.utf8))
    }

    @inlinable public var readableBytes: Int { writerIndex - readerIndex }
    @inlinable public var isEmpty: Bool { readableBytes == 0 }
    public var description: String { "ByteBuffer(readable: \(readableBytes))" }

    /// The readable bytes as a new array (copies).
    public var readableBytesArray: [UInt8] { Array(storage[readerIndex..<writerIndex]) }

    /// Calls `body` with the readable bytes.
    @inlinable
    public func withUnsafeReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[readerIndex..<writerIndex]))
        }
    }

    /// A buffer holding only a copy of the readable bytes, with storage of its own (one copy). `==` already compares
    /// readable bytes only; take a copy to stop sharing storage with a larger buffer (a receive buffer).
    public func copyOfReadableBytes() -> ByteBuffer {
        var out = ByteBuffer()
        out.storage = Array(storage[readerIndex..<writerIndex])
        out.writerIndex = out.storage.count
        return out
    }

    /// How many bytes the storage this buffer shares can hold, counted from its start (so including bytes before
    /// the reader index, and bytes of other slices of the same storage).
    public var storageCapacity: Int { storage.capacity }

    /// These readable bytes in a form fit to keep for long: `self` when they fill at least half of the storage they
    /// share, else a copy. Keeping a small slice of a large receive buffer would keep all of it alive.
    public func retainable() -> ByteBuffer {
        readableBytes * 2 >= storage.capacity ? self : copyOfReadableBytes()
    }

    public static func == (a: ByteBuffer, b: ByteBuffer) -> Bool {
        guard a.readableBytes == b.readableBytes else { return false }
        return a.withUnsafeReadableBytes { x in
            b.withUnsafeReadableBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
        }
    }

    public func hash(into h: inout Hasher) {
        withUnsafeReadableBytes { h.combine(bytes: $0) }
    }

    // MARK: writing

    @inlinable
    mutating func prepareWrite(_ count: Int) {
        if writerIndex == storage.count {
            return
        }
        // A slice or a buffer whose reader moved: drop bytes past the writer before appending.
        storage.removeSubrange(writerIndex...)
    }

    public mutating func reserveCapacity(_ n: Int) { storage.reserveCapacity(writerIndex + n) }

    @inlinable
    public mutating func writeInteger<T: FixedWidthInteger>(_ value: T, endianness: Endianness = .big) {
        prepareWrite(MemoryLayout<T>.size)
        let v = endianness == .big ? value.bigEndian : value.littleEndian
        withUnsafeBytes(of: v) { storage.append(contentsOf: $0) }
        writerIndex += MemoryLayout<T>.size
    }

    @inlinable
    public mutating func writeBytes(_ bytes: some Sequence<UInt8>) {
        prepareWrite(0)
        let before = storage.count
        storage.append(contentsOf: bytes)
        writerIndex += storage.count - before
    }

    public mutating func writeBytes(_ raw: UnsafeRawBufferPointer) {
        prepareWrite(raw.count)
        storage.append(contentsOf: raw)
        writerIndex += raw.count
    }

    /// Appends the readable bytes of `other`.
    public mutating func writeBuffer(_ other: ByteBuffer) {
        prepareWrite(other.readableBytes)
        storage.append(contentsOf: other.storage[other.readerIndex..<other.writerIndex])
        writerIndex += other.readableBytes
    }

    public mutating func writeString(_ s: String) { writeBytes(s.utf8) }

    /// Unsigned LEB128 (Kafka UNSIGNED_VARINT, protobuf varint).
    @inlinable
    public mutating func writeUnsignedVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        writeInteger(UInt8(v))
    }

    /// Zig-zag signed varint (Kafka VARINT/VARLONG inside records).
    @inlinable
    public mutating func writeVarint(_ value: Int64) {
        writeUnsignedVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Writes `count` zero bytes and returns the absolute index of the first (for back-patching lengths).
    public mutating func reserveBytes(_ count: Int) -> Int {
        prepareWrite(count)
        let at = writerIndex
        storage.append(contentsOf: repeatElement(0, count: count))
        writerIndex += count
        return at
    }

    // MARK: absolute access

    @inlinable
    public func getInteger<T: FixedWidthInteger>(at index: Int, endianness: Endianness = .big, as: T.Type = T.self)
        throws(DecodeError) -> T
    {
        let size = MemoryLayout<T>.size
        guard index >= readerIndex, index + size <= writerIndex else { throw .truncated(needed: size, available: max(0, writerIndex - index)) }
        var v: T = 0
        storage.withUnsafeBytes { raw in
            withUnsafeMutableBytes(of: &v) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[index..<index + size]))
            }
        }
        return endianness == .big ? T(bigEndian: v) : T(littleEndian: v)
    }

    /// Drops storage outside the readable range, so that a slice about to be modified copies only its own bytes
    /// (not the whole parent buffer it shares storage with). Returns how far indices moved.
    @discardableResult
    public mutating func compactToReadable() -> Int {
        let shift = readerIndex
        guard readerIndex != 0 || writerIndex != storage.count else { return 0 }
        storage = Array(storage[readerIndex..<writerIndex])
        writerIndex -= shift
        readerIndex = 0
        return shift
    }

    @inlinable
    public mutating func setInteger<T: FixedWidthInteger>(_ value: T, at index: Int, endianness: Endianness = .big) {
        var index = index
        if index >= readerIndex && (readerIndex != 0 || writerIndex != storage.count) {
            index -= compactToReadable()
        }
        let size = MemoryLayout<T>.size
        precondition(index >= 0 && index + size <= writerIndex, "setInteger out of bounds")
        let v = endianness == .big ? value.bigEndian : value.littleEndian
        storage.withUnsafeMutableBytes { raw in
            withUnsafeBytes(of: v) { src in
                UnsafeMutableRawBufferPointer(rebasing: raw[index..<index + size]).copyMemory(from: src)
            }
        }
    }

    /// A buffer sharing storage holding `length` bytes from absolute `index`.
    public func getSlice(at index: Int, length: Int) throws(DecodeError) -> ByteBuffer {
        guard length >= 0, index >= readerIndex, index + length <= writerIndex else {
            throw .truncated(needed: length, available: max(0, writerIndex - index))
        }
        var s = self
        s.readerIndex = index
        s.writerIndex = index + length
        return s
    }

    public func getBytes(at index: Int, length: Int) throws(DecodeError) -> [UInt8] {
        try getSlice(at: index, length: length).readableBytesArray
    }

    // MARK: reading (advances readerIndex)

    @inlinable
    public mutating func readInteger<T: FixedWidthInteger>(endianness: Endianness = .big, as: T.Type = T.self)
        throws(DecodeError) -> T
    {
        let v: T = try getInteger(at: readerIndex, endianness: endianness)
        readerIndex += MemoryLayout<T>.size
        return v
    }

    public mutating func readSlice(length: Int) throws(DecodeError) -> ByteBuffer {
        let s = try getSlice(at: readerIndex, length: length)
        readerIndex += length
        return s
    }

    public mutating func readBytes(length: Int) throws(DecodeError) -> [UInt8] {
        try readSlice(length: length).readableBytesArray
    }

    public mutating func readString(length: Int) throws(DecodeError) -> String {
        let s = try readSlice(length: length)
        return s.withUnsafeReadableBytes { String(decoding: $0, as: UTF8.self) }
    }

    public mutating func skip(_ n: Int) throws(DecodeError) {
        guard n >= 0, n <= readableBytes else { throw .truncated(needed: n, available: readableBytes) }
        readerIndex += n
    }

    /// Unsigned LEB128, at most 10 bytes; longer encodings are `.malformed`.
    @inlinable
    public mutating func readUnsignedVarint() throws(DecodeError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b: UInt8 = try readInteger()
            if shift == 63 && b > 1 { throw .malformed("varint overflows 64 bits") }
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw .malformed("varint longer than 10 bytes") }
        }
    }

    @inlinable
    public mutating func readVarint() throws(DecodeError) -> Int64 {
        let u = try readUnsignedVarint()
        return Int64(bitPattern: u >> 1) ^ -Int64(bitPattern: u & 1)
    }

    /// Discards bytes before the reader index (compaction for long-lived receive buffers).
    public mutating func discardReadBytes() {
        guard readerIndex > 0 else { return }
        storage.removeSubrange(0..<readerIndex)
        writerIndex -= readerIndex
        readerIndex = 0
    }

    public mutating func clear() {
        storage.removeAll(keepingCapacity: true)
        readerIndex = 0
        writerIndex = 0
    }
}

public enum Endianness: Sendable {
    case big, little
}

/// Why decoding stopped. Never a crash: every decoder of untrusted bytes throws one of these.
public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(needed: Int, available: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case let .truncated(n, a): "truncated input: needed \(n) bytes, \(a) available"
        case let .malformed(why): "malformed input: \(why)"
        }
    }
}
