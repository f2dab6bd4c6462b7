#if canImport(Glibc)
import Glibc
#endif
import WoodpeckerCore

/// Blocking file helpers; call only from the threadpool (inside `runBlocking`).
public enum FileOps {
    public static func parent(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "." }
        if slash == path.utf8.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// `mkdir -p dir`; each directory created is made durable by fsyncing its parent.
    public static func makeDirectories(_ dir: String) throws {
        var st = stat()
        if stat(dir, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            throw ioError("mkdir", path: dir, errno: ENOTDIR)
        }
        let up = parent(of: dir)
        if up != dir { try makeDirectories(up) }
        if mkdir(dir, 0o755) != 0 {
            let e = errno
            if e == EEXIST { return }  // a concurrent writer made it
            throw ioError("mkdir", path: dir, errno: e)
        }
        try fsyncDirectory(up)
    }

    /// Creates `path` exclusively, writes all of `data`, fsyncs and closes it. Removes it again on failure.
    public static func writeDurably(_ path: String, _ data: ByteBuffer) throws {
        try writeDurably(path, parts: [data])
    }

    /// `writeDurably` of the buffers back to back (one writev, no concatenation).
    public static func writeDurably(_ path: String, parts: [ByteBuffer]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw ioError("create", path: path, errno: errno) }
        do {
            try writevAll(fd, parts, path: path)
            if fsync(fd) != 0 { throw ioError("fsync", path: path, errno: errno) }
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
        if close(fd) != 0 {
            let e = errno
            unlink(path)
            throw ioError("close", path: path, errno: e)
        }
    }

    /// Writes the buffers back to back with writev(2), continuing after short writes and EINTR. The buffers are
    /// not mutated during the call and `parts` keeps their storage alive, so the pointers stay valid while used.
    public static func writevAll(_ fd: Int32, _ parts: [ByteBuffer], path: String, what: String = "writev") throws {
        var iov: [iovec] = []
        iov.reserveCapacity(parts.count)
        for p in parts where p.readableBytes > 0 {
            p.withUnsafeReadableBytes { raw in
                iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count))
            }
        }
        var index = 0
        try withExtendedLifetime(parts) {
            while index < iov.count {
                let count = Int32(min(iov.count - index, 1024))  // IOV_MAX on Linux
                let n = iov.withUnsafeMutableBufferPointer { writev(fd, $0.baseAddress! + index, count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError(what, path: path, errno: errno)
                }
                var left = n
                while left > 0 && index < iov.count {
                    if left >= iov[index].iov_len {
                        left -= iov[index].iov_len
                        index += 1
                    } else {
                        iov[index].iov_base += left
                        iov[index].iov_len -= left
                        left = 0
                    }
                }
            }
        }
    }

    /// Writes all of `raw` at the descriptor's position, retrying short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer, path: String, what: String = "write") throws {
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError(what, path: path, errno: errno)
            }
            offset += n
        }
    }

    public static func fsyncDirectory(_ dir: String) throws {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw ioError("open directory", path: dir, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw ioError("fsync directory", path: dir, errno: errno) }
    }

    /// Reads `range` with pread; fewer bytes only if the file ends early.
    public static func read(_ fd: Int32, _ range: Range<Int>, path: String) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: range.count) { buffer, count in
            count = 0
            while count < range.count {
                let n = pread(fd, buffer.baseAddress! + count, range.count - count, off_t(range.lowerBound + count))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("pread", path: path, errno: errno)
                }
                if n == 0 { break }
                count += n
            }
        }
    }

    /// size + mtime (ns) + inode: a rename-based `put` always changes the inode, so equal tags mean equal content.
    public static func etag(_ st: stat) -> String {
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return "\(String(st.st_size, radix: 16))-\(String(mtime, radix: 16))-\(String(st.st_ino, radix: 16))"
    }
}
