import CWoodpeckerShims
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import WoodpeckerCore

/// Hands memory that glibc's allocator keeps after frees back to the kernel, now and then.
///
/// A broker churns through buffers of up to several MiB (request frames, encoded blocks, S3 bodies). glibc serves
/// them from its arenas once its dynamic mmap threshold has risen, and free chunks in the middle of an arena stay
/// resident: measured here, a broker on S3 grew by 50-110 MiB of RSS per topic produced to, while the allocator had
/// only a third of its arena in use (`malloc_stats`), and `malloc_trim(0)` brought 162 MiB back to 57 MiB. Every
/// `intervalMs` this checks how many free bytes the arenas hold (`mallinfo2`) and, past `minFreeBytes`, trims on
/// the loop's thread pool (both walk the arenas under their locks: never on the loop thread).
public final class MemoryReleaser: @unchecked Sendable {
    private let loop: EventLoop
    private let intervalMs: UInt64
    private let minFreeBytes: Int
    private var timer: LoopTimer?
    private var trimming = false
    private let trimCount = Atomic<Int>(0)
    /// Trims that released memory (readable from any thread).
    public var trims: Int { trimCount.load(ordering: .relaxed) }

    public init(loop: EventLoop, intervalMs: UInt64 = 5_000, minFreeBytes: Int = 32 << 20) {
        self.loop = loop
        self.intervalMs = intervalMs
        self.minFreeBytes = minFreeBytes
    }

    /// Free bytes glibc's arenas hold (not returned to the kernel); 0 where that cannot be asked.
    public static func allocatorFreeBytes() -> Int {
        allocatorStats().free
    }

    /// Bytes the allocator holds in chunks mapped on their own (each freed with munmap and faulted in anew).
    public static func allocatorMappedBytes() -> Int {
        allocatorStats().mapped
    }

    /// Free, handed-out and separately mapped bytes of all arenas together (glibc's mallinfo2; zeros elsewhere).
    public static func allocatorStats() -> (free: Int, used: Int, mapped: Int) {
        var free = 0, used = 0, mapped = 0
        _ = wp_allocator_stats(&free, &used, &mapped)
        return (free, used, mapped)
    }

    /// Allocations up to this size come from the allocator's arenas instead of a mapping of their own.
    public static let mmapThresholdBytes = 32 << 20

    /// Sets the process's allocator for a server that churns through buffers of up to several MiB (request
    /// frames, encoded blocks, replicas' copies). glibc maps each allocation above its mmap threshold on its own
    /// and unmaps it on free, and trims an arena's top as soon as 128 KiB of it are free, so every such buffer is
    /// faulted in page by page and zeroed again: measured here, 1.1 million page faults in 8 s of a local broker
    /// taking 380 MB/s (QuorumBuffer nodes: 200,000 each at 90 MB/s). With buffers up to `mmapThresholdBytes`
    /// served from the arenas and their tops kept (trimmed past 256 MiB free), the broker took 100,000 page faults
    /// and 24 % more MB/s (nodes: 10-30,000 and 28-54 % more). Freed arena memory is still handed back by
    /// `MemoryReleaser`'s periodic trim, so RSS stays bounded. glibc's own `MALLOC_MMAP_THRESHOLD_`,
    /// `MALLOC_TRIM_THRESHOLD_` and `MALLOC_TOP_PAD_` environment variables, when set, win. Returns whether the
    /// settings took effect (false without glibc or when the environment sets them).
    @discardableResult
    public static func configureAllocator() -> Bool {
        let names: [String] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"]
        let set = names.contains { getenv($0) != nil }
        return !set && wp_allocator_configure(mmapThresholdBytes, 256 << 20, 16 << 20) == 1
    }

    /// Returns free arena memory to the kernel now, on the calling thread; true if any was released.
    @discardableResult
    public static func trimNow() -> Bool {
        wp_allocator_trim() != 0
    }

    /// Starts checking; call on the loop.
    public func start() {
        loop.preconditionInLoop()
        guard timer == nil else { return }
        let t = LoopTimer(loop: loop) { [weak self] in self?.tick() }
        t.start(afterMs: intervalMs, repeatMs: intervalMs)
        timer = t
    }

    /// Stops checking; call on the loop.
    public func stop() {
        loop.preconditionInLoop()
        timer?.close()
        timer = nil
    }

    private func tick() {
        guard !trimming else { return }
        trimming = true
        let threshold = minFreeBytes
        Task(executorPreference: loop) { [self] in
            // Both the count (which walks the free lists) and the trim run off the loop thread. runBlocking fails
            // only when libuv refuses the work; this round is then skipped and the next tick tries again.
            let trimmed = (try? await loop.runBlocking { () -> Bool in
                let stats = Self.allocatorStats()
                let free = stats.free
                Diagnostics.debug("allocator: \(stats.used >> 20) MiB used, \(free >> 20) MiB free; \(stats.mapped >> 20) MiB mapped")
                guard free >= threshold else { return false }
                return Self.trimNow()
            }) ?? false
            trimming = false
            if trimmed { trimCount.add(1, ordering: .relaxed) }
        }
    }
}
