import Synchronization
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// A segment as one local file, `<root>/<logId>/<segmentId>/data.log`: blocks appended in order, each made durable
/// by one `fdatasync`, then the footer (index + footer record) appended at completion. This is the original
/// Woodpecker's local mode and the cheapest durable layout on a filesystem (one sync per block, no new inode or
/// directory entry per block).
///
/// Fencing across processes: a fencer creates `write.fence`, then takes `flock(write.lock)`; a writer holds that
/// lock around each (fence check, `pwrite`, `fdatasync`). Once the fencer holds the lock, no write is in progress
/// and every later write sees the fence, so the blocks the fencer then reads are final. A crash leaves at most a
/// torn last block, which the CRC scan drops (it was never acknowledged).
/// Blocking syscalls run on the loop's threadpool; writes of one segment are serialized (one in flight).
final class FileSegmentStore: SegmentStore, @unchecked Sendable {
    let loop: EventLoop
    let dir: String
    var location: String { "file://\(dir)" }
    let maxConcurrentWrites = 1
    private var dataPath: String { dir + "/data.log" }
    private var lockPath: String { dir + "/write.lock" }
    private var fencePath: String { dir + "/write.fence" }

    private struct WriterFiles {
        var data: Int32 = -1
        var lock: Int32 = -1
        var nextOffset = 0
    }
    private let writer = Mutex(WriterFiles())

    init(loop: EventLoop, root: String, logId: Int64, segmentId: Int64) {
        self.loop = loop
        self.dir = "\(root)/\(logId)/\(segmentId)"
    }

    // MARK: writing

    func writeBlock(_ n: Int32, _ bytes: ByteBuffer) async throws {
        try await loop.runBlocking { [self] in
            try openForWriting()
            let (data, lock, offset) = writer.withLock { ($0.data, $0.lock, $0.nextOffset) }
            try withFlock(lock) {
                if access(fencePath, F_OK) == 0 {
                    throw WoodpeckerError(.lockLost, "segment \(location) was fenced by a newer writer; reopen the writer to continue")
                }
                try pwriteAll(data, bytes, at: offset, path: dataPath)
                if fdatasync(data) != 0 { throw ioError("fdatasync", path: dataPath, errno: errno) }
            }
            writer.withLock { $0.nextOffset = offset + bytes.readableBytes }
        }
    }

    /// Opens (creating) the segment's files on the first write. Runs on the threadpool.
    private func openForWriting() throws {
        if writer.withLock({ $0.data >= 0 }) { return }
        try FileOps.makeDirectories(dir)
        let data = open(dataPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard data >= 0 else { throw ioError("open", path: dataPath, errno: errno) }
        let lock = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard lock >= 0 else {
            close(data)
            throw ioError("open", path: lockPath, errno: errno)
        }
        var st = stat()
        fstat(data, &st)
        guard st.st_size == 0 else {
            close(data)
            close(lock)
            throw WoodpeckerError(.segmentStateInvalid, "\(dataPath) already holds \(st.st_size) bytes; a new segment must start empty")
        }
        try FileOps.fsyncDirectory(dir)
        writer.withLock {
            $0.data = data
            $0.lock = lock
        }
    }

    func writeFooter(_ footer: SegmentFooter) async throws {
        if let existing = try await readFooter() {
            guard existing.lac == footer.lac else {
                throw WoodpeckerError(.segmentStateInvalid, "\(dataPath) already has a footer with a different LAC; another writer completed this segment")
            }
            return
        }
        let bytes = SegmentCodec.encodeFooter(footer)
        let end = footer.blocks.reduce(0) { $0 + $1.size }
        try await loop.runBlocking { [self] in
            try FileOps.makeDirectories(dir)
            let fd = open(dataPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ioError("open", path: dataPath, errno: errno) }
            defer { close(fd) }
            try pwriteAll(fd, bytes, at: end, path: dataPath)
            if ftruncate(fd, off_t(end + bytes.readableBytes)) != 0 { throw ioError("ftruncate", path: dataPath, errno: errno) }
            if fsync(fd) != 0 { throw ioError("fsync", path: dataPath, errno: errno) }
            try FileOps.fsyncDirectory(dir)
        }
    }

    func fence(retries: Int) async throws -> [BlockInfo] {
        try await loop.runBlocking { [self] in
            try FileOps.makeDirectories(dir)
            let f = open(fencePath, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            guard f >= 0 else { throw ioError("create fence", path: fencePath, errno: errno) }
            fsync(f)
            close(f)
            try FileOps.fsyncDirectory(dir)
            let lock = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard lock >= 0 else { throw ioError("open", path: lockPath, errno: errno) }
            defer { close(lock) }
            // Waits for a write in progress to finish; later writes see the fence.
            try withFlock(lock) {}
        }
        return try await probeBlocks()
    }

    func release() async {
        let files = writer.withLock { w -> WriterFiles in
            let f = w
            w.data = -1
            w.lock = -1
            return f
        }
        if files.data >= 0 { close(files.data) }
        if files.lock >= 0 { close(files.lock) }
    }

    deinit {
        let files = writer.withLock { $0 }
        if files.data >= 0 { close(files.data) }
        if files.lock >= 0 { close(files.lock) }
    }

    // MARK: reading

    func readFooter() async throws -> SegmentFooter? {
        try await loop.runBlocking { [self] () -> SegmentFooter? in
            let fd = open(dataPath, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return nil }
                throw ioError("open", path: dataPath, errno: errno)
            }
            defer { close(fd) }
            var st = stat()
            fstat(fd, &st)
            let size = Int(st.st_size)
            let recBytes = SegmentCodec.footerRecordBytes
            guard size >= recBytes else { return nil }
            let tail = try preadAll(fd, at: size - recBytes, count: recBytes, path: dataPath)
            guard let rec = try? SegmentCodec.decodeFooterRecord(tail), Int(rec.indexOffset) + Int(rec.indexLength) + recBytes == size
            else { return nil }  // no footer yet: active or crashed segment
            let all = try preadAll(fd, at: Int(rec.indexOffset), count: size - Int(rec.indexOffset), path: dataPath)
            do {
                return try SegmentCodec.decodeFooter(all)
            } catch {
                throw WoodpeckerError(.corrupted, "footer of \(dataPath): \(error)")
            }
        }
    }

    func readBlock(at index: Int, of blocks: [BlockInfo], compacted: Bool) async throws -> DecodedBlock? {
        let offset = blocks[..<index].reduce(0) { $0 + $1.size }
        let size = blocks[index].size
        return try await loop.runBlocking { [self] () -> DecodedBlock? in
            let fd = open(dataPath, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return nil }
                throw ioError("open", path: dataPath, errno: errno)
            }
            defer { close(fd) }
            let bytes = try preadAll(fd, at: offset, count: size, path: dataPath)
            guard bytes.readableBytes == size else { return nil }
            do {
                return try SegmentCodec.decodeBlock(bytes)
            } catch {
                throw WoodpeckerError(.corrupted, "\(dataPath) block \(blocks[index].blockNumber) at byte \(offset): \(error)")
            }
        }
    }

    func readRun(number n: Int32) async throws -> [DecodedBlock]? {
        let blocks = try await probeBlocks()
        guard let i = blocks.firstIndex(where: { $0.blockNumber == n }) else { return nil }
        return try await readBlock(at: i, of: blocks, compacted: false).map { [$0] }
    }

    /// The blocks of the file from block 0 on, an unbroken run of block numbers and entry ids. Continues from what an
    /// earlier probe of the same file (same inode) found, reading only the bytes appended since: a reader in another
    /// process than the writer probes once per block it reads, which re-reading the whole file made quadratic.
    func probeBlocks() async throws -> [BlockInfo] {
        try await loop.runBlocking { [self] () -> [BlockInfo] in
            let fd = open(dataPath, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return [] }
                throw ioError("open", path: dataPath, errno: errno)
            }
            defer { close(fd) }
            var st = stat()
            if fstat(fd, &st) != 0 { throw ioError("fstat", path: dataPath, errno: errno) }
            let size = Int(st.st_size)
            let file = ProbeCache.FileId(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
            var known = Self.probeCache.withLock { $0.lookup(dataPath, file) } ?? ProbeCache.Entry(file: file)
            if known.end > size { known = ProbeCache.Entry(file: file) }  // shorter than what was read: start over
            let fresh = try preadAll(fd, at: known.end, count: size - known.end, path: dataPath)
            known.scannedBytes += fresh.readableBytes
            let scan = SegmentCodec.decodeLog(fresh)
            let base = known.end
            for (k, b) in scan.blocks.enumerated() {
                guard b.blockNumber == Int32(known.blocks.count),
                      b.firstEntryId == (known.blocks.last.map { $0.lastEntryId + 1 } ?? 0) else { break }
                known.blocks.append(b)
                known.end = base + scan.blockOffsets[k] + b.size
            }
            // A finalized file grows no more (readers go by its footer): nothing to continue from.
            let final = scan.footer != nil
            Self.probeCache.withLock { final ? $0.forget(dataPath) : $0.store(dataPath, known) }
            return known.blocks
        }
    }

    /// Bytes `probeBlocks` has read from `path` (a data.log) since it last started over; for tests.
    static func probeScannedBytes(_ path: String) -> Int? {
        probeCache.withLock { $0.entries[path]?.scannedBytes }
    }

    /// What probes learned of recently probed data files, for all stores of the process (a store is made per use).
    /// Bounded: least recently probed files are forgotten beyond `maxEntries` files or `maxBlocks` block entries in
    /// all (56 bytes each), except the file just probed.
    struct ProbeCache {
        struct FileId: Equatable { var device: UInt64; var inode: UInt64 }
        struct Entry {
            var file: FileId
            var blocks: [BlockInfo] = []
            /// Byte offset just past the last block in `blocks`.
            var end = 0
            var scannedBytes = 0
            var used: UInt64 = 0
        }
        var maxEntries = 64
        var maxBlocks = 256 * 1024
        var entries: [String: Entry] = [:]
        var clock: UInt64 = 0

        mutating func lookup(_ path: String, _ file: FileId) -> Entry? {
            guard let e = entries[path], e.file == file else { return nil }
            return e
        }

        mutating func store(_ path: String, _ entry: Entry) {
            clock += 1
            var e = entry
            e.used = clock
            entries[path] = e
            var blocks = entries.values.reduce(0) { $0 + $1.blocks.count }
            while entries.count > maxEntries || (blocks > maxBlocks && entries.count > 1),
                  let oldest = entries.min(by: { $0.value.used < $1.value.used }) {
                blocks -= oldest.value.blocks.count
                entries[oldest.key] = nil
            }
        }

        mutating func forget(_ path: String) { entries[path] = nil }
    }
    private static let probeCache = Mutex(ProbeCache())

    func compact(_ footer: SegmentFooter, targetBytes: Int) async throws -> SegmentFooter? { nil }
    func removeOriginals(after compacted: SegmentFooter) async throws {}

    func deleteAll() async throws {
        await release()
        try await loop.runBlocking { [self] in
            for p in [dataPath, lockPath, fencePath] where unlink(p) != 0 && errno != ENOENT {
                throw ioError("unlink", path: p, errno: errno)
            }
            if rmdir(dir) != 0 && errno != ENOENT && errno != ENOTEMPTY { throw ioError("rmdir", path: dir, errno: errno) }
        }
    }

    // MARK: helpers (threadpool only)

    private func withFlock(_ fd: Int32, _ body: () throws -> Void) throws {
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw ioError("flock", path: lockPath, errno: errno) }
        }
        defer { flock(fd, LOCK_UN) }
        try body()
    }

    private func pwriteAll(_ fd: Int32, _ bytes: ByteBuffer, at offset: Int, path: String) throws {
        try bytes.withUnsafeReadableBytes { raw in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("pwrite", path: path, errno: errno)
                }
                done += n
            }
        }
    }

    private func preadAll(_ fd: Int32, at offset: Int, count: Int, path: String) throws -> ByteBuffer {
        var buf = [UInt8](repeating: 0, count: count)
        var done = 0
        try buf.withUnsafeMutableBytes { raw in
            while done < count {
                let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("pread", path: path, errno: errno)
                }
                if n == 0 { break }
                done += n
            }
        }
        if done < count { buf.removeLast(count - done) }
        return ByteBuffer(bytes: buf)
    }
}
