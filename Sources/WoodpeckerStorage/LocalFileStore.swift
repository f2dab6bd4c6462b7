import Synchronization
import WoodpeckerCore
import WoodpeckerIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An `ObjectStore` on a local directory: key `a/b/c` is the file `<root>/a/b/c`.
///
/// Guarantees (on a POSIX file system with atomic `rename` and `link`, such as ext4 or xfs):
/// - `put` writes a temporary file in the key's directory, fsyncs it, renames it over the key and fsyncs the
///   directory: a reader sees the old file or the whole new one, and the object is durable when `put` returns.
/// - `putIfAbsent` publishes the fsync'd temporary file with `link()`, which fails with `EEXIST` when the key exists:
///   exactly one writer wins, across threads and processes.
/// - Every syscall runs on the libuv threadpool through `EventLoop.runBlocking`; the loop thread never blocks.
/// - Temporary names (`ObjectKey.tempPrefix` + pid + counter + random) never collide across processes and are never
///   listed. A process killed mid-`put` can leave one behind; nothing reads it.
/// - Empty directories left by `delete` are kept (removing them would race with a concurrent `put` into them).
/// - `list` reads each directory it opens whole (bounded by the directory's size, not the page size) and skips
///   subtrees that cannot hold a key after the continuation token.
///
/// Unlike S3, a key cannot also be a "directory" of other keys: with `a` stored, `put("a/b")` fails with
/// `.ioFailure` (ENOTDIR). Woodpecker's key layout never needs both.
public final class LocalFileStore: ObjectStore {
    /// Absolute or relative path of the root directory, without a trailing `/`.
    public let root: String
    public let loop: EventLoop
    public var description: String { "file://\(root)" }
    private let tempCounter = Atomic<UInt64>(0)

    /// The root directory is created on the first write if it does not exist.
    public init(root: String, loop: EventLoop) {
        precondition(!root.isEmpty, "LocalFileStore root must not be empty")
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
        self.loop = loop
    }

    /// The file holding `key` (validated).
    public func path(for key: String) throws -> String {
        try ObjectKey.validate(key, store: description)
        return root + "/" + key
    }

    private func tempName() -> String {
        let n = tempCounter.wrappingAdd(1, ordering: .relaxed).newValue
        let random = UInt64.random(in: 0...UInt64.max)
        return "\(ObjectKey.tempPrefix)\(getpid()).\(n).\(String(random, radix: 16))"
    }

    public func put(_ key: String, _ data: ByteBuffer) async throws {
        let path = try path(for: key)
        let dir = FileOps.parent(of: path)
        let temp = dir + "/" + tempName()
        try await loop.runBlocking {
            try FileOps.makeDirectories(dir)
            try FileOps.writeDurably(temp, data)
            if rename(temp, path) != 0 {
                let e = errno
                unlink(temp)
                throw ioError("rename over", path: path, errno: e)
            }
            try FileOps.fsyncDirectory(dir)
        }
    }

    public func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws {
        try await putIfAbsent(key, parts: [data])
    }

    public func putIfAbsent(_ key: String, parts: [ByteBuffer]) async throws {
        let path = try path(for: key)
        let dir = FileOps.parent(of: path)
        let temp = dir + "/" + tempName()
        let description = self.description
        try await loop.runBlocking {
            try FileOps.makeDirectories(dir)
            try FileOps.writeDurably(temp, parts: parts)
            if link(temp, path) != 0 {
                let e = errno
                unlink(temp)
                if e == EEXIST {
                    throw WoodpeckerError(.objectAlreadyExists, "\(description): object \(key) already exists")
                }
                throw ioError("link", path: path, errno: e)
            }
            unlink(temp)
            try FileOps.fsyncDirectory(dir)
        }
    }

    public func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer {
        let path = try path(for: key)
        let description = self.description
        return try await loop.runBlocking {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                let e = errno
                if e == ENOENT || e == ENOTDIR {
                    throw WoodpeckerError(.objectNotFound, "\(description): object \(key) not found")
                }
                throw ioError("open", path: path, errno: e)
            }
            defer { close(fd) }
            var st = stat()
            if fstat(fd, &st) != 0 { throw ioError("fstat", path: path, errno: errno) }
            if (st.st_mode & S_IFMT) != S_IFREG {
                throw WoodpeckerError(.objectNotFound, "\(description): object \(key) not found (a directory)")
            }
            let size = Int(st.st_size)
            let want = try range.map { try clip($0, size: size, key: key) } ?? 0..<size
            return ByteBuffer(bytes: try FileOps.read(fd, want, path: path))
        }
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        let path = try path(for: key)
        return try await loop.runBlocking {
            var st = stat()
            if stat(path, &st) != 0 {
                let e = errno
                if e == ENOENT || e == ENOTDIR { return nil }
                throw ioError("stat", path: path, errno: e)
            }
            if (st.st_mode & S_IFMT) != S_IFREG { return nil }
            return ObjectInfo(key: key, size: Int(st.st_size), etag: FileOps.etag(st))
        }
    }

    public func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage {
        guard limit > 0 else {
            throw WoodpeckerError(.invalidArgument, "\(description): list limit must be positive, got \(limit)")
        }
        let root = self.root
        return try await loop.runBlocking {
            var walk = SortedWalk(prefix: prefix, after: continuationToken, want: limit + 1)
            try walk.visit(directory: root, keyPrefix: "")
            let page = Array(walk.found.prefix(limit))
            return ObjectListPage(objects: page, continuationToken: walk.found.count > limit ? page.last?.key : nil)
        }
    }

    public func delete(_ key: String) async throws {
        try await delete(keys: [key])
    }

    /// Unlinks every key, then fsyncs each affected directory once.
    public func delete(keys: [String]) async throws {
        let paths = try keys.map { try path(for: $0) }
        try await loop.runBlocking {
            var dirs: Set<String> = []
            for path in paths {
                if unlink(path) != 0 {
                    let e = errno
                    // Missing (or a directory, which is not an object): nothing to delete.
                    if e == ENOENT || e == ENOTDIR || e == EISDIR { continue }
                    throw ioError("unlink", path: path, errno: e)
                }
                dirs.insert(FileOps.parent(of: path))
            }
            for dir in dirs.sorted() { try FileOps.fsyncDirectory(dir) }
        }
    }
}

/// Depth-first walk that yields keys in UTF-8 byte order: siblings are sorted with directories compared as
/// `name + "/"`, which is exactly where their keys fall among the full keys. Subtrees that cannot hold a key with
/// the prefix or after the continuation token are not opened; the walk stops once it has `want` keys.
struct SortedWalk {
    let prefix: String
    let after: String?
    let want: Int
    var found: [ObjectInfo] = []

    init(prefix: String, after: String?, want: Int) {
        self.prefix = prefix
        self.after = after
        self.want = want
    }

    private struct Entry {
        var name: String
        var isDirectory: Bool
        var sortKey: String { isDirectory ? name + "/" : name }
    }

    mutating func visit(directory: String, keyPrefix: String) throws {
        guard let handle = opendir(directory) else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return }  // nothing stored (yet), or removed while walking
            throw ioError("opendir", path: directory, errno: e)
        }
        var entries: [Entry] = []
        while let ent = readdir(handle) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." || name.hasPrefix(ObjectKey.tempPrefix) { continue }
            var type = Int32(ent.pointee.d_type)
            if type == Int32(DT_UNKNOWN) {
                var st = stat()
                guard lstat(directory + "/" + name, &st) == 0 else { continue }
                type = (st.st_mode & S_IFMT) == S_IFDIR ? Int32(DT_DIR) : ((st.st_mode & S_IFMT) == S_IFREG ? Int32(DT_REG) : 0)
            }
            if type == Int32(DT_DIR) { entries.append(Entry(name: name, isDirectory: true)) }
            if type == Int32(DT_REG) { entries.append(Entry(name: name, isDirectory: false)) }
        }
        closedir(handle)
        entries.sort { ObjectKey.less($0.sortKey, $1.sortKey) }

        for entry in entries {
            if found.count >= want { return }
            let key = keyPrefix + entry.sortKey
            let path = directory + "/" + entry.name
            if entry.isDirectory {
                guard ObjectKey.hasPrefix(key, prefix) || ObjectKey.hasPrefix(prefix, key) else { continue }
                // Every key below starts with `key`: skip the subtree if the token is past all of them.
                if let after, ObjectKey.less(key, after), !ObjectKey.hasPrefix(after, key) { continue }
                try visit(directory: path, keyPrefix: key)
            } else {
                guard ObjectKey.hasPrefix(key, prefix) else { continue }
                if let after, !ObjectKey.less(after, key) { continue }
                var st = stat()
                if stat(path, &st) != 0 { continue }  // deleted while listing
                found.append(ObjectInfo(key: key, size: Int(st.st_size), etag: FileOps.etag(st)))
            }
        }
    }
}
