#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import WoodpeckerCore
import WoodpeckerIO

/// The files of an on-disk `EmbeddedMetadataStore`, all blocking: call only from a blocking context
/// (`EventLoop.runBlocking`), and from one at a time (the store runs at most one journal job).
///
/// Layout of the directory:
/// - `LOCK`: held with `flock(LOCK_EX)` while open, so a second opener (process or store) fails;
/// - `snapshot`: the state at the start of journal generation G (written to `snapshot.tmp`, fsynced, renamed,
///   directory fsynced: it is either the old or the new one, never a mix);
/// - `journal-<G as 16 hex digits>.wal`: CRC-framed records after the snapshot, generations G, G+1, ...
///
/// Crash safety: a record is acknowledged only after `fdatasync`; a generation is started (file created and the
/// directory fsynced) only after every record of the previous one is durable; a snapshot names the generation that
/// follows it and is renamed into place before older generations are unlinked. On open, a bad frame in the last
/// generation is a torn tail (truncated away); a bad frame in an older generation is corruption (open fails).
final class JournalDirectory: @unchecked Sendable {
    let path: String
    private var lockFd: Int32 = -1
    private var journalFd: Int32 = -1
    private(set) var generation: UInt64 = 0
    private(set) var journalBytes = 0

    struct Recovered {
        var state: MetadataState
        /// Events of the replayed journal records, revision > `snapshotRevision`, for watch history.
        var events: [(revision: Int64, event: WatchEvent)]
        var snapshotRevision: Int64
        /// Bytes cut from a torn tail (0 when the journal ended cleanly).
        var truncatedBytes: Int
    }

    private init(path: String) { self.path = path }

    static func journalName(_ g: UInt64) -> String {
        let hex = String(g, radix: 16)
        return "journal-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".wal"
    }

    /// Locks, loads the snapshot, replays the journal (truncating a torn tail) and opens the last generation for
    /// appending.
    static func open(path: String, nowMillis: UInt64) throws -> (JournalDirectory, Recovered) {
        let d = JournalDirectory(path: path)
        do {
            let r = try d.openLocked(nowMillis: nowMillis)
            return (d, r)
        } catch {
            d.close()
            throw error
        }
    }

    private func openLocked(nowMillis: UInt64) throws -> Recovered {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw ioError("create metadata directory", path: path, errno: errno) }
        lockFd = Glibc.open(path + "/LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFd >= 0 else { throw ioError("open lock file", path: path + "/LOCK", errno: errno) }
        if flock(lockFd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            if e == EWOULDBLOCK {
                throw WoodpeckerError(.metadataUnavailable,
                                      "metadata directory \(path) is in use by another process or store (flock on \(path)/LOCK); close that one or use another directory")
            }
            throw ioError("lock", path: path + "/LOCK", errno: e)
        }
        _ = unlink(path + "/snapshot.tmp")  // a snapshot that never got renamed; ENOENT is the normal case

        var state = MetadataState()
        var firstGeneration: UInt64 = 0
        if let bytes = try readFileIfExists(path + "/snapshot") {
            (state, firstGeneration) = try MetadataState.decodeSnapshot(bytes, nowMillis: nowMillis, path: path + "/snapshot")
        }
        let snapshotRevision = state.revision
        let generations = try listGenerations()
        for g in generations where g < firstGeneration {
            _ = unlink(path + "/" + Self.journalName(g))  // superseded by the snapshot; a leftover is harmless
        }
        let live = generations.filter { $0 >= firstGeneration }
        var events: [(Int64, WatchEvent)] = []
        var truncated = 0
        var expected = firstGeneration
        for (i, g) in live.enumerated() {
            let file = path + "/" + Self.journalName(g)
            guard g == expected else {
                throw WoodpeckerError(.metadataCorrupted, "journal generation \(expected) missing before \(file); restore the directory from a backup")
            }
            expected += 1
            let bytes = try readFileIfExists(file) ?? []
            let scan = try JournalCodec.scan(bytes, path: file)
            for r in scan.records {
                let evs = try state.apply(r, nowMillis: nowMillis)
                for e in evs { events.append((e.kv.modRevision, e)) }
            }
            if scan.stoppedEarly {
                guard i == live.count - 1 else {
                    throw WoodpeckerError(.metadataCorrupted,
                                          "journal \(file) is damaged at offset \(scan.validBytes) but is not the last generation; restore the directory from a backup")
                }
                truncated = bytes.count - scan.validBytes
                try truncateFile(file, to: scan.validBytes)
            }
        }
        generation = live.last ?? firstGeneration
        try openJournal(generation, created: live.isEmpty)
        return Recovered(state: state, events: events, snapshotRevision: snapshotRevision, truncatedBytes: truncated)
    }

    private func openJournal(_ g: UInt64, created: Bool) throws {
        let file = path + "/" + Self.journalName(g)
        let fd = Glibc.open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("open journal", path: file, errno: errno) }
        if created {
            // The new file's directory entry must be durable before records in it are acknowledged.
            try syncDirectory()
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ioError("stat journal", path: file, errno: e)
        }
        if journalFd >= 0 { Glibc.close(journalFd) }
        journalFd = fd
        journalBytes = Int(st.st_size)
        generation = g
    }

    /// Appends bytes to the current generation and makes them durable.
    func append(_ bytes: [UInt8]) throws {
        let file = path + "/" + Self.journalName(generation)
        try bytes.withUnsafeBytes { try FileOps.writeAll(journalFd, $0, path: file, what: "write journal") }
        guard fdatasync(journalFd) == 0 else { throw ioError("fdatasync journal", path: file, errno: errno) }
        journalBytes += bytes.count
    }

    /// Starts generation `generation + 1` and installs `snapshot` (which must name that generation and hold the
    /// state after every record appended so far), then removes the old generation.
    func rotate(snapshot: [UInt8]) throws {
        let old = generation
        try openJournal(old + 1, created: true)
        let tmp = path + "/snapshot.tmp"
        try writeFileDurably(tmp, snapshot)
        guard rename(tmp, path + "/snapshot") == 0 else { throw ioError("rename snapshot", path: tmp, errno: errno) }
        try syncDirectory()
        _ = unlink(path + "/" + Self.journalName(old))  // superseded; if it stays, the next open removes it
    }

    func close() {
        if journalFd >= 0 { Glibc.close(journalFd); journalFd = -1 }
        if lockFd >= 0 { Glibc.close(lockFd); lockFd = -1 }  // closing the descriptor releases the flock
    }

    // MARK: helpers

    private func listGenerations() throws -> [UInt64] {
        guard let dir = opendir(path) else { throw ioError("list", path: path, errno: errno) }
        defer { closedir(dir) }
        var gens: [UInt64] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("journal-"), name.hasSuffix(".wal"), name.utf8.count == 8 + 16 + 4 else { continue }
            if let g = UInt64(name.dropFirst(8).dropLast(4), radix: 16) { gens.append(g) }
        }
        return gens.sorted()
    }

    private func readFileIfExists(_ file: String) throws -> [UInt8]? {
        let fd = Glibc.open(file, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw ioError("open", path: file, errno: errno)
        }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ioError("stat", path: file, errno: errno) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var off = 0
        try bytes.withUnsafeMutableBytes { raw in
            while off < raw.count {
                let n = read(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("read", path: file, errno: errno)
                }
                if n == 0 { break }
                off += n
            }
        }
        return Array(bytes[0..<off])
    }

    private func truncateFile(_ file: String, to length: Int) throws {
        let fd = Glibc.open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("open for truncate", path: file, errno: errno) }
        defer { Glibc.close(fd) }
        guard ftruncate(fd, off_t(length)) == 0 else { throw ioError("truncate torn tail", path: file, errno: errno) }
        guard fsync(fd) == 0 else { throw ioError("fsync", path: file, errno: errno) }
    }

    private func writeFileDurably(_ file: String, _ bytes: [UInt8]) throws {
        let fd = Glibc.open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("create", path: file, errno: errno) }
        defer { Glibc.close(fd) }
        try bytes.withUnsafeBytes { try FileOps.writeAll(fd, $0, path: file) }
        guard fsync(fd) == 0 else { throw ioError("fsync", path: file, errno: errno) }
    }

    private func syncDirectory() throws {
        try FileOps.fsyncDirectory(path)
    }
}
