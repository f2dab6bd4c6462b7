import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerIO
@testable import WoodpeckerLogStore

#if canImport(Glibc)
import Glibc
#endif

/// The built CLI (`swift build` puts it at `.build/debug/woodpecker`; `WOODPECKER_BIN` overrides).
private let logstoreBinary: String? = {
    if let p = ProcessInfo.processInfo.environment["WOODPECKER_BIN"], FileManager.default.isExecutableFile(atPath: p) {
        return p
    }
    let p = FileManager.default.currentDirectoryPath + "/.build/debug/woodpecker"
    return FileManager.default.isExecutableFile(atPath: p) ? p : nil
}()

/// `woodpecker logstore` as a child process, its stdout in a file.
private final class NodeProcess {
    let process = Process()
    let stdoutPath: String

    init(root: String, tag: String) throws {
        stdoutPath = root + "/stdout-\(tag).txt"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: logstoreBinary!)
        process.arguments = ["logstore", "--listen", "127.0.0.1:0", "--storage", "file://" + root, "--data-dir", root + "/data"]
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// A test that fails midway must not leave the node running.
    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// The port from the `logstore listening on HOST:PORT` line.
    func port(timeoutMs: UInt64 = 10_000) async throws -> Int {
        let deadline = Clock.monotonicMillis() + timeoutMs
        while Clock.monotonicMillis() < deadline {
            let text = (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("logstore listening on ") }),
               let colon = line.lastIndex(of: ":"), let p = Int(line[line.index(after: colon)...]) {
                return p
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw WoodpeckerError(.timeout, "logstore did not report its port")
    }
}

@Suite(.timeLimit(.minutes(1)), .enabled(if: logstoreBinary != nil, "needs .build/debug/woodpecker"))
struct LogStoreProcessTests {
    /// A node killed with SIGKILL right after acknowledging appends still holds them (and its fences) when restarted
    /// on the same data directory; SIGTERM stops it cleanly with exit status 0.
    @Test func killedNodeRestartedOnItsDirectoryStillHoldsAcknowledgedBlocks() async throws {
        let root = try temporaryDirectory()
        let loop = EventLoop(name: "logstore-process")
        let ref = SegmentRef(objectPrefix: "wal/", logId: 3, segmentId: 1)
        let fencedRef = SegmentRef(objectPrefix: "wal/", logId: 3, segmentId: 0)
        let blocks = (0..<5).map { makeBlock(Int32($0), firstEntryId: Int64($0) * 3, fill: UInt8($0)) }

        let first = try NodeProcess(root: root, tag: "1")
        let port1 = try await first.port()
        let client1 = LogStoreClient(loop: loop, address: "127.0.0.1:\(port1)")
        for n in 0..<5 { try await client1.append(ref, block: Int32(n), bytes: blocks[n], confirmedThrough: -1) }
        _ = try await client1.fence(fencedRef)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        await client1.close()

        let second = try NodeProcess(root: root, tag: "2")
        let port2 = try await second.port()
        let client2 = LogStoreClient(loop: loop, address: "127.0.0.1:\(port2)")
        let s = try await client2.status(ref)
        #expect(s.blocks.map(\.blockNumber) == [0, 1, 2, 3, 4])
        for n in 0..<5 { #expect(try await client2.readBlock(ref, number: Int32(n)) == blocks[n]) }
        #expect(try await client2.status(fencedRef).fenced)
        // Completing uploads everything to the objects directory the broker's file storage uses.
        try await client2.complete(ref, lastBlock: 4)
        // `complete` confirms all five at once: they go up as one run object at block 0's key.
        let objects = root + "/objects/" + ref.directory
        let data = try Data(contentsOf: URL(fileURLWithPath: objects + "0.blk"))
        #expect([UInt8](data) == blocks.flatMap(\.readableBytesArray))
        #expect(try FileManager.default.contentsOfDirectory(atPath: objects).filter { $0.hasSuffix(".blk") } == ["0.blk"])
        await client2.close()
        kill(second.process.processIdentifier, SIGTERM)
        second.process.waitUntilExit()
        #expect(second.process.terminationReason == .exit && second.process.terminationStatus == 0)
    }
}
