import WoodpeckerCore

/// Journal framing: `length u32 | crc u32 | payload`, big-endian, where crc is CRC-32C over the four length bytes
/// followed by the payload (so a damaged length is caught too). Payload: `kind u8` then
/// - 1 commit: `revision i64 | count uvarint | effects`, effect = `1 | key | value | lease i64` (put) or `2 | key`
///   (delete); key and value are `uvarint length | bytes`;
/// - 2 grant: `lease i64 | ttlSeconds i64`;
/// - 3 revoke: `lease i64 | revision i64`.
enum JournalCodec {
    static let headerBytes = 8
    /// Larger lengths are damage, not records (a record holds at most one request, bounded well below this).
    static let maxPayloadBytes = 64 * 1024 * 1024

    static func appendFrame(_ record: JournalRecord, to out: inout ByteBuffer) {
        var p = ByteBuffer(capacity: 64)
        switch record {
        case let .commit(revision, effects):
            p.writeInteger(UInt8(1))
            p.writeInteger(revision)
            p.writeUnsignedVarint(UInt64(effects.count))
            for e in effects {
                switch e {
                case let .put(key, value, lease):
                    p.writeInteger(UInt8(1))
                    p.writeUnsignedVarint(UInt64(key.bytes.count))
                    p.writeBytes(key.bytes)
                    p.writeUnsignedVarint(UInt64(value.count))
                    p.writeBytes(value)
                    p.writeInteger(lease)
                case let .delete(key):
                    p.writeInteger(UInt8(2))
                    p.writeUnsignedVarint(UInt64(key.bytes.count))
                    p.writeBytes(key.bytes)
                }
            }
        case let .grant(lease, ttl):
            p.writeInteger(UInt8(2))
            p.writeInteger(lease)
            p.writeInteger(ttl)
        case let .revoke(lease, revision):
            p.writeInteger(UInt8(3))
            p.writeInteger(lease)
            p.writeInteger(revision)
        }
        precondition(p.readableBytes <= maxPayloadBytes, "journal record of \(p.readableBytes) bytes")
        let length = UInt32(p.readableBytes)
        var lengthBytes = ByteBuffer(capacity: 4)
        lengthBytes.writeInteger(length)
        let crc = CRC32C.checksum(p, seed: CRC32C.checksum(lengthBytes))
        out.writeInteger(length)
        out.writeInteger(crc)
        out.writeBuffer(p)
    }

    /// What a scan of journal bytes found: the records of the valid prefix, its length, and whether it stopped
    /// early at a torn or damaged frame (then `validBytes < bytes.count`).
    struct Scan {
        var records: [JournalRecord] = []
        var validBytes = 0
        var stoppedEarly = false
    }

    /// Decodes frames until the end or the first frame that is incomplete or fails its CRC. A frame whose CRC holds
    /// but whose payload does not decode throws: that was written that way, so it is corruption, not a torn tail.
    static func scan(_ bytes: [UInt8], path: String) throws(WoodpeckerError) -> Scan {
        var s = Scan()
        let buf = ByteBuffer(bytes: bytes)
        var at = 0
        while at < bytes.count {
            guard bytes.count - at >= headerBytes,
                  let length: UInt32 = try? buf.getInteger(at: at),
                  let crc: UInt32 = try? buf.getInteger(at: at + 4),
                  Int(length) <= maxPayloadBytes, bytes.count - at - headerBytes >= Int(length)
            else {
                s.stoppedEarly = true
                break
            }
            let expected = bytes.withUnsafeBytes { raw in
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(at + 8)..<(at + 8 + Int(length))]),
                                seed: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[at..<(at + 4)])))
            }
            guard expected == crc else {
                s.stoppedEarly = true
                break
            }
            // The slice is in bounds: checked above.
            var payload = (try? buf.getSlice(at: at + headerBytes, length: Int(length))) ?? ByteBuffer()
            do {
                s.records.append(try decodePayload(&payload))
            } catch {
                throw WoodpeckerError(.metadataCorrupted,
                                      "journal \(path): record at offset \(at) has a valid CRC but does not decode (\(error)); restore the directory from a backup")
            }
            at += headerBytes + Int(length)
            s.validBytes = at
        }
        return s
    }

    private static func decodePayload(_ p: inout ByteBuffer) throws -> JournalRecord {
        let kind: UInt8 = try p.readInteger()
        let record: JournalRecord
        switch kind {
        case 1:
            let revision: Int64 = try p.readInteger()
            let count = try p.readUnsignedVarint()
            guard count <= UInt64(p.readableBytes) else { throw DecodeError.malformed("effect count \(count)") }
            var effects: [Effect] = []
            for _ in 0..<count {
                let tag: UInt8 = try p.readInteger()
                let key = KeyBytes(bytes: try p.readLengthPrefixedBytes())
                switch tag {
                case 1:
                    let value = try p.readLengthPrefixedBytes()
                    effects.append(.put(key: key, value: value, lease: try p.readInteger()))
                case 2: effects.append(.delete(key))
                default: throw DecodeError.malformed("effect tag \(tag)")
                }
            }
            record = .commit(revision: revision, effects: effects)
        case 2: record = .grant(lease: try p.readInteger(), ttlSeconds: try p.readInteger())
        case 3: record = .revoke(lease: try p.readInteger(), revision: try p.readInteger())
        default: throw DecodeError.malformed("record kind \(kind)")
        }
        guard p.readableBytes == 0 else { throw DecodeError.malformed("\(p.readableBytes) trailing bytes") }
        return record
    }
}

extension ByteBuffer {
    /// `uvarint length | bytes`, with the length checked against what is left (never trapping on damage).
    mutating func readLengthPrefixedBytes() throws(DecodeError) -> [UInt8] {
        let n = try readUnsignedVarint()
        guard n <= UInt64(readableBytes) else { throw .truncated(needed: Int(clamping: n), available: readableBytes) }
        return try readBytes(length: Int(n))
    }
}
