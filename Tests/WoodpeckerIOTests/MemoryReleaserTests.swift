#if canImport(Glibc)
import Glibc
#endif
import Testing
import WoodpeckerCore
import WoodpeckerIO

/// Resident memory of this process, from /proc/self/statm.
private func residentBytes() -> Int {
    guard let f = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(f) }
    var size = 0, resident = 0
    guard withUnsafeMutablePointer(to: &size, { s in withUnsafeMutablePointer(to: &resident) { r in
        withVaList([s, r]) { vfscanf(f, "%ld %ld", $0) }
    } }) == 2 else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

@Suite(.serialized) struct MemoryReleaserTests {
    /// Chunks below the mmap threshold, every other one freed, leave free memory inside an arena that glibc keeps
    /// resident; the releaser notices it and hands it back to the kernel on its own.
    @Test func freedArenaMemoryIsReturnedToTheKernel() async throws {
        let loop = EventLoop(name: "releaser-test")
        defer { loop.shutdown() }
        let chunk = 64 * 1024
        var chunks: [UnsafeMutableRawPointer] = []
        for _ in 0..<2048 {
            guard let p = malloc(chunk) else { break }
            memset(p, 1, chunk)  // make the pages resident
            chunks.append(p)
        }
        for i in stride(from: 0, to: chunks.count, by: 2) { free(chunks[i]) }
        let freeBefore = MemoryReleaser.allocatorFreeBytes()
        #expect(freeBefore >= 48 << 20, "the arenas should hold the freed half (\(freeBefore) bytes free)")
        let residentBefore = residentBytes()
        let releaser = MemoryReleaser(loop: loop, intervalMs: 20, minFreeBytes: 16 << 20)
        loop.execute { releaser.start() }
        let trimmed = await eventually(timeoutMs: 10_000) { releaser.trims >= 1 }
        #expect(trimmed, "the releaser did not trim within 10 s")
        let residentAfter = residentBytes()
        #expect(residentBefore - residentAfter >= 32 << 20,
                "resident memory went from \(residentBefore >> 20) MiB to \(residentAfter >> 20) MiB")
        await Task(executorPreference: loop) { releaser.stop() }.value
        for i in stride(from: 1, to: chunks.count, by: 2) { free(chunks[i]) }
    }

    /// After `configureAllocator`, a buffer of several MiB comes from an arena (reused after free) instead of a
    /// mapping of its own that is unmapped on free and faulted in anew next time. glibc's default threshold is
    /// 128 KiB and rises only to the size of the largest mapped chunk freed so far.
    @Test func configuredAllocatorServesMiBBuffersFromItsArenas() throws {
        try #require(MemoryReleaser.configureAllocator(), "glibc refused the settings (or MALLOC_* variables are set)")
        let size = 24 << 20
        let mappedBefore = MemoryReleaser.allocatorMappedBytes()
        let p = try #require(malloc(size))
        memset(p, 1, 4096)
        let mappedDuring = MemoryReleaser.allocatorMappedBytes()
        free(p)
        #expect(mappedDuring - mappedBefore < size, "a \(size >> 20) MiB buffer was mapped on its own")
    }
}
