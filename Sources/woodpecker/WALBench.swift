import ArgumentParser
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

struct WALBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure append throughput and latency on local storage against the same-run fsync ceiling.")
    @Option(help: "Data directory (a fresh log is created in it).") var dataDir: String
    @Option(help: "Bytes per entry.") var entryBytes: Int = 1024
    @Option(help: "Seconds of the maximum-rate phase (the latency phase runs as long).") var seconds: Double = 5
    @Option(help: "Concurrent appenders.") var writers: Int = 64
    @Option(help: "Latency phase rate as a fraction of the measured maximum.") var rateFraction: Double = 0.5
    @Option(help: "Storage: local data.log files (default) or s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true]; the ceiling is then parallel PUTs of the same size.")
    var storage: String?

    func run() async throws {
        var config = WALConfig()
        config.auditIntervalMs = 0
        let rt = try await Runtime.open(dataDir: dataDir, storage: storage, metadata: nil, config: config)
        let onS3 = storage?.hasPrefix("s3://") ?? false
        let streams = config.maxInFlightBlocks
        let entryBytes = max(1, entryBytes)
        let writers = max(1, writers)
        let seconds = seconds
        let fraction = rateFraction
        let report = try await onLoop(rt.loop) { () -> String in
            let log = try await rt.client.createLog("bench-\(Clock.wallMillis())")
            let w = try await log.openWriter()
            let payload = ByteBuffer(bytes: (0..<entryBytes).map { UInt8(truncatingIfNeeded: $0 &* 31) })

            // Phase 1: closed loop, `writers` appenders as fast as acknowledgements come back.
            let max = try await closedLoop(loop: rt.loop, writer: w, payload: payload, writers: writers, seconds: seconds)
            let blocks = await w.blocksFlushed
            let encoded = await w.encodedBytesFlushed
            let avgBlock = blocks > 0 ? encoded / blocks : entryBytes
            // Phase 2: open loop at a fraction of the maximum rate, latency measured from the scheduled time.
            let rate = Swift.max(1.0, max.entriesPerSecond * fraction)
            let fixed = try await openLoop(loop: rt.loop, writer: w, payload: payload, rate: rate, seconds: seconds)
            try await w.close()
            // Ceiling: sequential writes with an fsync per block of the average block size (local), or the store's
            // own parallel PUT rate for objects of that size (S3), same duration.
            var device = LatencyRun()
            var ideal = LatencyRun()
            let ceiling: Double
            if onS3 {
                ceiling = try await putCeiling(store: rt.store, objectBytes: avgBlock, streams: streams, seconds: seconds, loop: rt.loop)
            } else {
                device = try await rt.loop.runBlocking { try fsyncCeiling(dir: dataDir, blockBytes: avgBlock, seconds: seconds) }
                ceiling = device.mbPerSecond
                ideal = try await rt.loop.runBlocking {
                    try idealGroupCommit(dir: dataDir, entryBytes: entryBytes, rate: rate, seconds: seconds)
                }
            }
            let ratio = max.mbPerSecond / ceiling
            // The device's own tail: no append can be durable faster than one write + fsync of its block.
            let deviceLine = onS3 ? "" : "\nceiling latency per write+fsync: p50=\(us(device.p(0.5))) p99=\(us(device.p(0.99))) p99.9=\(us(device.p(0.999)))"
            // The best any WAL could do on this device at the latency phase's rate: one thread writing and syncing
            // everything due, entries arriving in the generator's 1 ms ticks.
            let idealLine = onS3 ? "" : "\nideal group commit at the same rate (one thread: write + fdatasync of all due entries, same 1 ms arrival ticks): p50=\(us(ideal.p(0.5))) p99=\(us(ideal.p(0.99))) p99.9=\(us(ideal.p(0.999)))  our p99 / ideal p99 = \(fmt(Double(fixed.p(0.99)) / Double(Swift.max(1, ideal.p(0.99)))))x"
            return """
                entry_bytes=\(entryBytes) writers=\(writers) seconds=\(seconds)
                max:     \(fmt(max.mbPerSecond)) MB/s  \(fmt(max.entriesPerSecond)) entries/s  p50=\(us(max.p(0.5))) p99=\(us(max.p(0.99))) p99.9=\(us(max.p(0.999)))  blocks=\(blocks) avg_block_bytes=\(avgBlock)
                ceiling: \(fmt(ceiling)) MB/s  (\(onS3 ? "\(streams) parallel PUTs of \(avgBlock)-byte objects" : "sequential write + fsync per \(avgBlock)-byte block"), same run)
                ratio:   \(fmt(ratio * 100))% of ceiling\(deviceLine)
                at \(fmt(rate)) entries/s (\(Int(fraction * 100))% of max): \(fmt(fixed.mbPerSecond)) MB/s  p50=\(us(fixed.p(0.5))) p99=\(us(fixed.p(0.99))) p99.9=\(us(fixed.p(0.999)))\(idealLine)
                peak_rss_mib=\(peakRSSMiB())
                """
        }
        print(report)
        await rt.close()
    }
}

struct LatencyRun: Sendable {
    var entries = 0
    var bytes = 0
    var elapsedSeconds = 0.0
    var latenciesNs: [UInt64] = []
    var mbPerSecond: Double { Double(bytes) / 1e6 / elapsedSeconds }
    var entriesPerSecond: Double { Double(entries) / elapsedSeconds }
    func p(_ q: Double) -> UInt64 {
        guard !latenciesNs.isEmpty else { return 0 }
        let s = latenciesNs.sorted()
        return s[Swift.min(s.count - 1, Int(Double(s.count) * q))]
    }
}

func closedLoop(loop: EventLoop, writer: LogWriter, payload: ByteBuffer, writers: Int, seconds: Double) async throws -> LatencyRun {
    let start = Clock.monotonicNanos()
    let end = start + UInt64(seconds * 1e9)
    let runs = try await withThrowingTaskGroup(of: LatencyRun.self) { group in
        for _ in 0..<writers {
            group.addTask(executorPreference: loop) {
                var r = LatencyRun()
                var t = Clock.monotonicNanos()
                while t < end {
                    _ = try await writer.append(payload, key: 0, timestamp: 0)
                    let now = Clock.monotonicNanos()
                    r.latenciesNs.append(now - t)
                    r.entries += 1
                    r.bytes += payload.readableBytes
                    t = now
                }
                return r
            }
        }
        var all: [LatencyRun] = []
        for try await r in group { all.append(r) }
        return all
    }
    var total = LatencyRun()
    for r in runs {
        total.entries += r.entries
        total.bytes += r.bytes
        total.latenciesNs += r.latenciesNs
    }
    total.elapsedSeconds = Double(Clock.monotonicNanos() - start) / 1e9
    return total
}

/// Issues appends at a fixed rate from a 1 ms ticker; latency counts from each entry's scheduled time. Appends are
/// enqueued directly on the writer's loop with a completion callback (no task per entry, so the generator itself
/// adds no scheduling delay).
func openLoop(loop: EventLoop, writer: LogWriter, payload: ByteBuffer, rate: Double, seconds: Double) async throws -> LatencyRun {
    let start = Clock.monotonicNanos()
    let total = Int(rate * seconds)
    let intervalNs = 1e9 / rate
    let sink = LatencySink(expected: total)
    var issued = 0
    while issued < total {
        let now = Clock.monotonicNanos()
        let due = Swift.min(total, Int(Double(now - start) / intervalNs) + 1)
        while issued < due {
            let scheduled = start + UInt64(Double(issued) * intervalNs)
            writer.enqueueOnLoop(payload, key: 0, timestamp: 0) { result in
                sink.record(result, latencyNs: Clock.monotonicNanos() - scheduled)
            }
            issued += 1
        }
        await loop.sleep(ms: 1)
    }
    try await sink.waitAll(loop: loop)
    var r = LatencyRun()
    r.latenciesNs = sink.latencies
    r.entries = sink.latencies.count
    r.bytes = r.entries * payload.readableBytes
    r.elapsedSeconds = Double(Clock.monotonicNanos() - start) / 1e9
    return r
}

/// Collects completion latencies on the loop thread.
final class LatencySink: @unchecked Sendable {
    var latencies: [UInt64] = []
    var failure: WoodpeckerError?
    let expected: Int
    init(expected: Int) {
        self.expected = expected
        latencies.reserveCapacity(expected)
    }
    func record(_ r: Result<LogMessageId, WoodpeckerError>, latencyNs: UInt64) {
        switch r {
        case .success: latencies.append(latencyNs)
        case let .failure(e): failure = e
        }
    }
    func waitAll(loop: EventLoop) async throws {
        while latencies.count < expected {
            if let failure { throw failure }
            await loop.sleep(ms: 5)
        }
    }
}

/// `streams` concurrent PUTs of `objectBytes`-byte objects for `seconds`; MB/s. The objects are deleted after.
func putCeiling(store: any ObjectStore, objectBytes: Int, streams: Int, seconds: Double, loop: EventLoop) async throws -> Double {
    let body = ByteBuffer(bytes: (0..<max(1, objectBytes)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    let start = Clock.monotonicNanos()
    let end = start + UInt64(seconds * 1e9)
    let prefix = "ceiling-\(Clock.wallMillis())/"
    let written = try await withThrowingTaskGroup(of: (Int, [String]).self) { group in
        for s in 0..<streams {
            group.addTask(executorPreference: loop) {
                var n = 0
                var keys: [String] = []
                while Clock.monotonicNanos() < end {
                    let k = "\(prefix)\(s)-\(keys.count)"
                    try await store.put(k, body)
                    keys.append(k)
                    n += body.readableBytes
                }
                return (n, keys)
            }
        }
        var total = 0
        var keys: [String] = []
        for try await (n, k) in group {
            total += n
            keys += k
        }
        try await store.delete(keys: keys)
        return total
    }
    return Double(written) / 1e6 / (Double(Clock.monotonicNanos() - start) / 1e9)
}

/// A temporary file for the device baselines: written sequentially, each write followed by `sync`, rewound past
/// 4 GiB so that it stays bounded, removed when released. Threadpool only.
final class ScratchLog {
    let path: String
    private let fd: Int32
    private var inFile = 0

    init(dir: String, name: String) throws {
        path = dir + "/\(name).\(getpid()).tmp"
        fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ioError("open", path: path, errno: errno) }
    }

    /// Writes `bytes` at the end and syncs them with `sync` (`fsync` or `fdatasync`).
    func append(_ bytes: UnsafeRawBufferPointer, sync: (Int32) -> Int32, syncName: String) throws {
        try FileOps.writeAll(fd, bytes, path: path)
        guard sync(fd) == 0 else { throw ioError(syncName, path: path, errno: errno) }
        inFile += bytes.count
        if inFile > 4 << 30 {
            _ = ftruncate(fd, 0)
            lseek(fd, 0, SEEK_SET)
            inFile = 0
        }
    }

    deinit {
        close(fd)
        unlink(path)
    }
}

/// Sequential writes of `blockBytes` with an fsync after each, into one file, for `seconds`: MB/s and the latency
/// of each write + fsync.
func fsyncCeiling(dir: String, blockBytes: Int, seconds: Double) throws -> LatencyRun {
    let file = try ScratchLog(dir: dir, name: "ceiling")
    let block = [UInt8](repeating: 0x5a, count: max(1, blockBytes))
    let start = Clock.monotonicNanos()
    let end = start + UInt64(seconds * 1e9)
    var run = LatencyRun()
    while Clock.monotonicNanos() < end {
        let t0 = Clock.monotonicNanos()
        try block.withUnsafeBytes { try file.append($0, sync: fsync, syncName: "fsync") }
        run.latenciesNs.append(Clock.monotonicNanos() - t0)
        run.entries += 1
        run.bytes += block.count
    }
    run.elapsedSeconds = Double(Clock.monotonicNanos() - start) / 1e9
    run.latenciesNs.sort()
    return run
}

/// The latency floor of group commit on this device at `rate` entries/s: entries of `entryBytes` become visible in
/// 1 ms ticks (as the open-loop generator issues them); one thread writes everything visible with one `fdatasync`,
/// then looks again. Latency counts from each entry's scheduled time, as in `openLoop`.
func idealGroupCommit(dir: String, entryBytes: Int, rate: Double, seconds: Double) throws -> LatencyRun {
    let file = try ScratchLog(dir: dir, name: "ideal")
    let total = Int(rate * seconds)
    let intervalNs = 1e9 / rate
    var buffer = [UInt8](repeating: 0x5a, count: max(1, entryBytes) * 1024)
    var run = LatencyRun()
    run.latenciesNs.reserveCapacity(total)
    let start = Clock.monotonicNanos()
    var done = 0
    while done < total {
        let tick = (Clock.monotonicNanos() - start) / 1_000_000 * 1_000_000  // entries due by the last tick are visible
        let visible = Swift.min(total, Int(Double(tick) / intervalNs) + 1)
        if visible <= done {
            var ts = timespec(tv_sec: 0, tv_nsec: 100_000)
            nanosleep(&ts, nil)
            continue
        }
        let bytes = (visible - done) * entryBytes
        if buffer.count < bytes { buffer = [UInt8](repeating: 0x5a, count: bytes) }
        try buffer.withUnsafeBytes { try file.append(UnsafeRawBufferPointer(rebasing: $0[..<bytes]), sync: fdatasync, syncName: "fdatasync") }
        let end = Clock.monotonicNanos()
        for i in done..<visible { run.latenciesNs.append(end - (start + UInt64(Double(i) * intervalNs))) }
        run.entries += visible - done
        run.bytes += bytes
        done = visible
    }
    run.elapsedSeconds = Double(Clock.monotonicNanos() - start) / 1e9
    return run
}

func fmt(_ d: Double) -> String {
    let x = (d * 10).rounded() / 10
    return String(x)
}

func us(_ ns: UInt64) -> String { "\(fmt(Double(ns) / 1000))us" }

func peakRSSMiB() -> Int {
    guard let f = fopen("/proc/self/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(cChars: line)
        if s.hasPrefix("VmHWM:") {
            return (Int(s.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
        }
    }
    return -1
}
