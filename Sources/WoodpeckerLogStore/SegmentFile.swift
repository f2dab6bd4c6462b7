import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One record of a node's per-segment append-only file.
enum SegmentFileRecord: Equatable {
    /// First record of every file: which segment the file holds.
    case header(SegmentRef)
    /// A verified block, with the writer's confirmed point when it arrived.
    case block(Int32, confirmedThrough: Int32, bytes: ByteBuffer)
    case fence
    /// Blocks 0...n are durable in object storage.
    case uploaded(Int32)
    /// The segment was completed through block n; it holds nothing any more.
    case completed(Int32)

    var type: UInt8 {
        switch self {
        case .header: 1
        case .block: 2
        case .fence: 3
        case .uploaded: 4
        case .completed: 5
        }
    }
}

/// What a segment file says after replay.
struct LoadedSegment {
    var ref: SegmentRef
    var path: String
    var blocks: [Int32: ByteBuffer] = [:]
    var fenced = false
    var uploadedThrough: Int32 = -1
    var confirmedThrough: Int32 = -1
    var completedThrough: Int32?
    /// Bytes cut off the end (a torn or corrupt tail record).
    var truncatedBytes = 0
}

/// The per-segment files of a node's data directory. Record framing (big-endian):
/// `u32 CRC32C(type | length | payload) | u8 type | u32 length | payload`. A file is only ever appended to, or
/// replaced as a whole (write to a temporary name, rename); a torn tail record is cut off on load.
///
/// Durability: every append is a `write(2)` finished before the node replies, so the bytes survive the death of the
/// node process (the page cache holds them). Surviving a machine crash needs `sync` (fdatasync per append), or
/// relies on the other replicas of the quorum.
///
/// Blocking: call only from the libuv threadpool (`EventLoop.runBlocking`).
enum SegmentFiles {
    static let suffix = ".seg"
    static let recordOverhead = 9

    /// `<logId>-<segmentId>-<FNV-1a 64 of the object prefix, hex>.seg`. The header record inside names the
    /// segment exactly; the hash only keeps names short and distinct.
    static func fileName(_ ref: SegmentRef) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in ref.objectPrefix.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return "\(ref.logId)-\(ref.segmentId)-\(String(h, radix: 16))\(suffix)"
    }

    static func encode(_ records: [SegmentFileRecord]) -> ByteBuffer {
        var parts: [ByteBuffer] = []
        encodeParts(records, into: &parts)
        guard parts.count > 1 else { return parts.first ?? ByteBuffer() }
        var out = ByteBuffer(capacity: parts.reduce(0) { $0 + $1.readableBytes })
        for p in parts { out.writeBuffer(p) }
        return out
    }

    /// Encodes records as buffers to be written back to back (`append`). A block record's bytes are not copied:
    /// its head (CRC, type, length, block number, confirmed point) is a small buffer of its own, the block buffer
    /// follows as it is, and the record CRC is joined from the head's and the block's (stated, so verified) CRC.
    static func encodeParts(_ records: [SegmentFileRecord], into parts: inout [ByteBuffer]) {
        var out = ByteBuffer()
        for r in records {
            let start = out.writerIndex
            _ = out.reserveBytes(4)
            out.writeInteger(r.type)
            let lengthAt = out.reserveBytes(4)
            var tail: ByteBuffer?
            switch r {
            case let .header(ref): LogStoreWire.writeRef(ref, &out)
            case let .block(n, confirmed, bytes):
                out.writeInteger(n)
                out.writeInteger(confirmed)
                tail = bytes
            case .fence: break
            case let .uploaded(n), let .completed(n): out.writeInteger(n)
            }
            out.setInteger(UInt32(out.writerIndex - lengthAt - 4 + (tail?.readableBytes ?? 0)), at: lengthAt)
            var crc = CRC32C.checksum(try! out.getSlice(at: start + 4, length: out.writerIndex - start - 4))
            if let tail {
                // Blocks reach the file verified (`LogStoreNode.append`), so the block's own CRC stands for its bytes.
                crc = SegmentCodec.blockObjectChecksum(tail).map { CRC32C.combine(crc, $0, length: tail.readableBytes) }
                    ?? CRC32C.checksum(tail, seed: crc)
            }
            out.setInteger(crc, at: start)
            if let tail {
                parts.append(out)
                parts.append(tail)
                out = ByteBuffer()
            }
        }
        if out.readableBytes > 0 { parts.append(out) }
    }

    /// Decodes records until the end or the first torn/corrupt record; returns the records and the byte length of
    /// the valid prefix.
    static func decode(_ bytes: ByteBuffer) -> (records: [SegmentFileRecord], validBytes: Int) {
        var b = bytes
        var out: [SegmentFileRecord] = []
        var valid = 0
        while b.readableBytes >= recordOverhead {
            let start = b.readerIndex
            guard let crc = try? b.getInteger(at: start, as: UInt32.self),
                  let type = try? b.getInteger(at: start + 4, as: UInt8.self),
                  let length = try? b.getInteger(at: start + 5, as: UInt32.self),
                  Int(length) <= b.readableBytes - recordOverhead,
                  let covered = try? b.getSlice(at: start + 4, length: 5 + Int(length)),
                  CRC32C.checksum(covered) == crc,
                  var payload = try? b.getSlice(at: start + recordOverhead, length: Int(length))
            else { break }
            let record: SegmentFileRecord?
            switch type {
            case 1: record = (try? LogStoreWire.readRef(&payload)).map { .header($0) }
            case 2:
                if let n = try? payload.readInteger(as: Int32.self), let c = try? payload.readInteger(as: Int32.self) {
                    record = .block(n, confirmedThrough: c, bytes: payload.copyOfReadableBytes())
                } else {
                    record = nil
                }
            case 3: record = .fence
            case 4: record = (try? payload.readInteger(as: Int32.self)).map { .uploaded($0) }
            case 5: record = (try? payload.readInteger(as: Int32.self)).map { .completed($0) }
            default: record = nil
            }
            guard let record else { break }
            out.append(record)
            b.readerIndex = start + recordOverhead + Int(length)
            valid = b.readerIndex - bytes.readerIndex
        }
        return (out, valid)
    }

    /// Appends encoded records with write(2); with `sync`, fdatasync before returning.
    static func append(_ path: String, _ data: ByteBuffer, sync: Bool) throws {
        try append(path, [data], sync: sync)
    }

    /// Appends the buffers back to back (`encodeParts`), with as few writev(2) calls as they allow; with `sync`,
    /// fdatasync before returning.
    static func append(_ path: String, _ parts: [ByteBuffer], sync: Bool) throws {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw ioError("open segment file", path: path, errno: errno) }
        defer { close(fd) }
        try FileOps.writevAll(fd, parts, path: path)
        if sync && fdatasync(fd) != 0 { throw ioError("fdatasync", path: path, errno: errno) }
    }

    /// Replaces the file's content as a whole (temporary file + rename).
    static func replace(_ path: String, _ data: ByteBuffer, sync: Bool) throws {
        let temp = path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ioError("create", path: temp, errno: errno) }
        do {
            try FileOps.writevAll(fd, [data], path: temp)
            if sync && fsync(fd) != 0 { throw ioError("fsync", path: temp, errno: errno) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        close(fd)
        if rename(temp, path) != 0 {
            let e = errno
            unlink(temp)
            throw ioError("rename", path: temp, errno: e)
        }
    }

    static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw ioError("unlink", path: path, errno: errno) }
    }

    /// Reads and replays every segment file of `directory` (created if missing). A torn or corrupt tail is cut off
    /// the file; a block record whose segment-block CRC fails ends the replay of that file the same way. A file
    /// without a valid header record is left alone and reported in `skipped`.
    static func loadAll(_ directory: String) throws -> (segments: [LoadedSegment], skipped: [String]) {
        try FileOps.makeDirectories(directory)
        guard let dir = opendir(directory) else { throw ioError("opendir", path: directory, errno: errno) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name.hasSuffix(suffix) { names.append(name) }
            if name.hasSuffix(suffix + ".tmp") { unlink(directory + "/" + name) }  // an interrupted replace
        }
        closedir(dir)
        var out: [LoadedSegment] = []
        var skipped: [String] = []
        for name in names.sorted() {
            let path = directory + "/" + name
            let bytes = try readWhole(path)
            if let s = try replay(path, bytes) { out.append(s) } else { skipped.append(path) }
        }
        return (out, skipped)
    }

    private static func replay(_ path: String, _ bytes: ByteBuffer) throws -> LoadedSegment? {
        var (records, valid) = decode(bytes)
        guard case let .header(ref)? = records.first else { return nil }
        var s = LoadedSegment(ref: ref, path: path)
        for (i, r) in records.enumerated().dropFirst() {
            switch r {
            case .header: break
            case let .block(n, c, blockBytes):
                guard (try? SegmentCodec.verifyBlock(blockBytes))?.blockNumber == n else {
                    // Cannot happen after the record CRC passed, unless a bug wrote it: stop here like a torn tail.
                    valid = SegmentFiles.encode(Array(records[0..<i])).readableBytes
                    records.removeLast(records.count - i)
                    break
                }
                s.blocks[n] = blockBytes
                s.confirmedThrough = max(s.confirmedThrough, c)
            case .fence: s.fenced = true
            case let .uploaded(n): s.uploadedThrough = max(s.uploadedThrough, n)
            case let .completed(n):
                s.completedThrough = n
                s.fenced = true
                s.uploadedThrough = max(s.uploadedThrough, n)
                s.confirmedThrough = max(s.confirmedThrough, n)
            }
            if records.count <= i { break }
        }
        for n in s.blocks.keys where n <= s.uploadedThrough { s.blocks[n] = nil }
        if valid < bytes.readableBytes {
            s.truncatedBytes = bytes.readableBytes - valid
            if truncate(path, off_t(valid)) != 0 { throw ioError("truncate", path: path, errno: errno) }
        }
        return s
    }

    private static func readWhole(_ path: String) throws -> ByteBuffer {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw ioError("open", path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw ioError("fstat", path: path, errno: errno) }
        let size = Int(st.st_size)
        let bytes = try [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = 0
            while count < size {
                let n = pread(fd, buf.baseAddress! + count, size - count, off_t(count))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("pread", path: path, errno: errno)
                }
                if n == 0 { break }
                count += n
            }
        }
        return ByteBuffer(bytes: bytes)
    }
}
