import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// A fresh directory under the system temp dir, removed by `remove()`.
struct TempDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "wp-storage-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }  // best effort: a leftover dir is harmless

    /// Every file and directory name below the root (relative paths).
    func allEntries() -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String]) ?? []
    }
}

@Suite struct LocalFileStoreTests {
    @Test(arguments: ObjectStoreConformance.Check.allCases)
    func conformance(_ check: ObjectStoreConformance.Check) async throws {
        let loop = EventLoop(name: "fs-conformance")
        defer { loop.shutdown() }
        let dir = try TempDirectory()
        defer { dir.remove() }
        // A root that does not exist yet: the store creates it on the first write.
        try await ObjectStoreConformance { LocalFileStore(root: dir.path + "/not/yet", loop: loop) }.run(check)
        // No operation of any check leaves a temporary file behind.
        #expect(dir.allEntries().filter { $0.contains(ObjectKey.tempPrefix) } == [])
    }

    @Test func keysMapToFilesAndSurviveANewStoreInstance() async throws {
        let loop = EventLoop(name: "fs-layout")
        defer { loop.shutdown() }
        let dir = try TempDirectory()
        defer { dir.remove() }
        let s = LocalFileStore(root: dir.path + "/", loop: loop)
        #expect(s.description == "file://\(dir.path)")
        try await s.put("log/1/0.blk", ByteBuffer(bytes: [1, 2, 3]))
        try await s.putIfAbsent("log/1/footer.blk", ByteBuffer(bytes: [4]))
        #expect(FileManager.default.contents(atPath: dir.path + "/log/1/0.blk") == Data([1, 2, 3]))
        #expect(FileManager.default.contents(atPath: dir.path + "/log/1/footer.blk") == Data([4]))
        let reopened = LocalFileStore(root: dir.path, loop: loop)
        #expect(try await reopened.get("log/1/0.blk").readableBytesArray == [1, 2, 3])
        #expect(try await reopened.listAll(prefix: "log/").map(\.key) == ["log/1/0.blk", "log/1/footer.blk"])
        #expect(dir.allEntries().sorted() == ["log", "log/1", "log/1/0.blk", "log/1/footer.blk"])
    }

    @Test func strayTempFilesFromACrashAreNeverListed() async throws {
        let loop = EventLoop(name: "fs-stray")
        defer { loop.shutdown() }
        let dir = try TempDirectory()
        defer { dir.remove() }
        let s = LocalFileStore(root: dir.path, loop: loop)
        try await s.put("seg/0.blk", ByteBuffer(bytes: [1]))
        // What a process killed between create and rename leaves behind.
        #expect(FileManager.default.createFile(atPath: dir.path + "/seg/\(ObjectKey.tempPrefix)999.1.abc", contents: Data([9])))
        #expect(try await s.listAll(prefix: "").map(\.key) == ["seg/0.blk"])
        #expect(try await s.listAll(prefix: "seg/.wp").isEmpty)
    }

    @Test func aConcurrentReaderNeverSeesAHalfWrittenObject() async throws {
        let loop = EventLoop(name: "fs-atomic")
        defer { loop.shutdown() }
        let dir = try TempDirectory()
        defer { dir.remove() }
        let s = LocalFileStore(root: dir.path, loop: loop)
        let size = 4 << 20
        try await s.put("big", ByteBuffer(bytes: [UInt8](repeating: 0, count: size)))
        let versions = 12
        let observed = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask {
                for v in 1...versions {
                    try await s.put("big", ByteBuffer(bytes: [UInt8](repeating: UInt8(v), count: size)))
                }
                return []
            }
            group.addTask {
                var seen: [UInt8] = []
                // Read until the writer's last version shows up (bounded by the number of attempts).
                for _ in 0..<2000 {
                    let b = try await s.get("big").readableBytesArray
                    let first = b.first ?? 255
                    // Whole object, every byte from one version.
                    guard b.count == size, b.allSatisfy({ $0 == first }) else { return [255] }
                    seen.append(first)
                    if first == UInt8(versions) { break }
                }
                return seen
            }
            var all: [UInt8] = []
            for try await r in group { all += r }
            return all
        }
        #expect(!observed.contains(255))
        #expect(observed.last == UInt8(versions))
        // Versions are observed in write order.
        #expect(observed == observed.sorted())
        #expect(dir.allEntries() == ["big"])
    }

    @Test func aKeyUnderAnExistingObjectFailsWithAnIOError() async throws {
        let loop = EventLoop(name: "fs-notdir")
        defer { loop.shutdown() }
        let dir = try TempDirectory()
        defer { dir.remove() }
        let s = LocalFileStore(root: dir.path, loop: loop)
        try await s.put("a", ByteBuffer(bytes: [1]))
        let e = await #expect(throws: WoodpeckerError.self) { try await s.put("a/b", ByteBuffer(bytes: [2])) }
        #expect(e?.code == .ioFailure)
        #expect(e?.message.contains(dir.path + "/a") == true)
        #expect(dir.allEntries() == ["a"])
    }
}
