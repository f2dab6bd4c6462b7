import ArgumentParser
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO

#if canImport(Glibc)
import Glibc
#endif

struct WALAppend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Append each stdin line as one entry; print SEGMENT:ENTRY for each once it is durable.")
    @Option(help: "Data directory (objects and metadata).") var dataDir: String
    @Option(help: "Log name (created when missing).") var log: String
    @Option(help: "Metadata store: embedded (a journal under the data dir, one process at a time) or etcd://HOST:PORT[,HOST:PORT]/PREFIX (shared by processes).")
    var metadata: String = "embedded"
    @Option(help: "Entries in flight before reading more input.") var window: Int = 4096

    func run() async throws {
        let rt = try await Runtime.local(dataDir: dataDir, metadata: metadata)
        let name = log
        let window = max(1, window)
        try await onLoop(rt.loop) {
            let log = try await rt.client.openOrCreateLog(name)
            let writer = try await log.openWriter()
            let pipeline = AppendPipeline(loop: rt.loop, writer: writer, window: window)
            try await pipeline.run()
            try await writer.close()
        }
        await rt.close()
    }
}

/// Reads stdin in chunks off the loop and appends each line. Each id is printed as soon as its entry is durable
/// (acknowledgements arrive in append order, on the loop), not when input ends; at most `window` entries are
/// outstanding before more input is read. The first failed append ends the command with that error.
/// All state is touched only on the loop thread (the run task and the writer's completions both run there).
final class AppendPipeline: @unchecked Sendable {
    let loop: EventLoop
    let writer: LogWriter
    let window: Int
    private var outstanding = 0
    private var out = StdoutWriter()
    private var flushScheduled = false
    private var failure: WoodpeckerError?
    private var waiter: CheckedContinuation<Void, Never>?

    init(loop: EventLoop, writer: LogWriter, window: Int) {
        self.loop = loop
        self.writer = writer
        self.window = window
    }

    func run() async throws {
        var partial: [UInt8] = []
        while true {
            try await waitUntil { self.outstanding < self.window }
            let chunk = try await loop.runBlocking { () -> [UInt8] in
                var buf = [UInt8](repeating: 0, count: 65536)
                let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 { throw ioError("read", path: "stdin", errno: errno) }
                return Array(buf.prefix(n))
            }
            if chunk.isEmpty { break }
            var start = 0
            for (i, b) in chunk.enumerated() where b == UInt8(ascii: "\n") {
                partial.append(contentsOf: chunk[start..<i])
                submit(partial)
                partial.removeAll(keepingCapacity: true)
                start = i + 1
            }
            partial.append(contentsOf: chunk[start...])
        }
        if !partial.isEmpty { submit(partial) }
        try await waitUntil { self.outstanding == 0 }
        out.flush()
    }

    /// Suspends until `condition` holds (re-checked after each acknowledgement); throws the first append failure.
    private func waitUntil(_ condition: @escaping () -> Bool) async throws {
        while failure == nil && !condition() {
            await withCheckedContinuation { waiter = $0 }
        }
        if let failure {
            out.flush()
            throw failure
        }
    }

    private func submit(_ line: [UInt8]) {
        let payload = ByteBuffer(bytes: line.isEmpty ? [UInt8(ascii: "\n")] : line)
        outstanding += 1
        writer.enqueueOnLoop(payload, key: 0, timestamp: 0) { [self] result in
            outstanding -= 1
            switch result {
            case let .success(id):
                out.append("\(id)\n")
                if !flushScheduled {
                    // One write(2) per batch of acknowledgements: flush after the current loop job.
                    flushScheduled = true
                    loop.execute { [self] in
                        flushScheduled = false
                        out.flush()
                    }
                }
            case let .failure(e):
                if failure == nil { failure = e }
            }
            if let w = waiter {
                waiter = nil
                w.resume()
            }
        }
    }
}

struct WALRead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read", abstract: "Print SEGMENT:ENTRY<TAB>payload for each entry of a log.")
    @Option(help: "Data directory.") var dataDir: String
    @Option(help: "Log name.") var log: String
    @Option(help: "Metadata store: embedded (a journal under the data dir, one process at a time) or etcd://HOST:PORT[,HOST:PORT]/PREFIX (shared by processes).")
    var metadata: String = "embedded"
    @Option(help: "earliest, latest, or SEGMENT:ENTRY") var from: String = "earliest"
    @Flag(help: "Keep waiting for new entries.") var follow = false

    func run() async throws {
        let position: ReadPosition
        switch from {
        case "earliest": position = .earliest
        case "latest": position = .latest
        default:
            guard let id = LogMessageId(parsing: Substring(from)) else {
                throw ValidationError("--from must be earliest, latest or SEGMENT:ENTRY, not \(from)")
            }
            position = .id(id)
        }
        let rt = try await Runtime.local(dataDir: dataDir, metadata: metadata)
        let name = log
        let follow = follow
        try await onLoop(rt.loop) {
            let log = try await rt.client.openLog(name)
            let reader = try await log.openReader(from: position)
            var out = StdoutWriter()
            while true {
                let batch = try await reader.next(maxEntries: 1000, waitMs: follow ? 1000 : 0)
                if batch.isEmpty && !follow { break }
                for e in batch {
                    out.append("\(e.id)\t")
                    out.append(bytes: e.payload.readableBytesArray)
                    out.append("\n")
                }
                out.flush()
            }
            await reader.close()
        }
        await rt.close()
    }
}

struct WALList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List logs and their segments.")
    @Option(help: "Data directory.") var dataDir: String
    @Option(help: "Metadata store: embedded (a journal under the data dir, one process at a time) or etcd://HOST:PORT[,HOST:PORT]/PREFIX (shared by processes).")
    var metadata: String = "embedded"

    func run() async throws {
        let rt = try await Runtime.local(dataDir: dataDir, metadata: metadata)
        try await onLoop(rt.loop) {
            var out = StdoutWriter()
            for name in try await rt.client.listLogs() {
                let log = try await rt.client.openLog(name)
                out.append("\(name) (id \(log.logId))\n")
                for s in try await log.segmentMetas() {
                    let m = s.value
                    out.append("  segment \(m.segmentId) \(m.state) lastEntry=\(m.lastEntryId) bytes=\(m.sizeBytes)\n")
                }
            }
            out.flush()
        }
        await rt.close()
    }
}
