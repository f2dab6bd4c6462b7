import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `woodpecker wal append|read --metadata etcd://...` in separate processes sharing one data dir and one etcd.
@Suite(.serialized, .enabled(if: WALEtcdServer.enabled, WALEtcdServer.skipReason))
struct WALEtcdProcessTests {
    /// Waits up to `ms` for the child to exit; returns whether it did.
    static func exits(_ c: Child, within ms: Int) -> Bool {
        let deadline = Date().addingTimeInterval(Double(ms) / 1000)
        while c.process.isRunning && Date() < deadline { usleep(5_000) }
        return !c.process.isRunning
    }

    /// Closes the child's stdin through its `FileHandle` (which then does not close the descriptor again when it is
    /// deallocated; `Child.closeStdin()` closes the raw descriptor, and the handle's later close can hit whatever
    /// reused that number in this process).
    static func endInput(_ c: Child) {
        (c.process.standardInput as? Pipe)?.fileHandleForWriting.closeFile()
    }

    /// Feeds `lines` in chunks of 25 with small pauses; returns the lines written.
    static func feed(_ c: Child, _ lines: [String]) -> [String] {
        var sent: [String] = []
        var i = 0
        while i < lines.count {
            let chunk = Array(lines[i..<min(i + 25, lines.count)])
            if !c.feed(chunk.map { $0 + "\n" }.joined()) { break }
            sent += chunk
            i += chunk.count
            usleep(2_000)
        }
        return sent
    }

    /// Two `wal append` processes open the same log: the older is fenced and says so on stderr (lock lost /
    /// fenced) and exits non-zero; every id either printed reads back with its payload through `wal read`.
    @Test(.enabled(if: woodpeckerBinary != nil, "build the CLI first: swift build --product woodpecker (.build/debug/woodpecker)"))
    func twoAppendProcessesOnOneEtcd() async throws {
        let server = try await WALEtcdServer()
        defer { server.stop() }
        let dir = NSTemporaryDirectory() + "wp-wal-2proc-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let url = "etcd://127.0.0.1:\(server.clientPort)/twoproc"
        let args = ["wal", "append", "--data-dir", dir, "--log", "shared", "--metadata", url, "--window", "64"]

        let a = try Child(args)
        var sentA = Self.feed(a, (0..<200).map { "a\($0)" })
        #expect(a.waitForLines(sentA.count, timeoutMs: 20_000), "older writer acknowledged its first lines; stderr: \(a.stderr)")

        let b = try Child(args)
        let sentB1 = Self.feed(b, (0..<100).map { "b\($0)" })
        #expect(b.waitForLines(sentB1.count, timeoutMs: 20_000), "newer writer acknowledged its lines; stderr: \(b.stderr)")

        // The older process writes again: its segment is fenced, so it fails and exits.
        sentA += Self.feed(a, (200..<400).map { "a\($0)" })
        #expect(Self.exits(a, within: 20_000), "the fenced process exits")
        let statusA = a.finish()
        #expect(statusA != 0, "the fenced process reports failure")
        let errA = a.stderr
        #expect(errA.contains("lockLost") && (errA.contains("fenced") || errA.contains("lease")), "stderr names the lost lock: \(errA)")

        let sentB2 = Self.feed(b, (100..<200).map { "b\($0)" })
        Self.endInput(b)
        #expect(b.finish() == 0, "the newer writer finishes cleanly: \(b.stderr)")
        let sentB = sentB1 + sentB2
        #expect(b.lines.count == sentB.count, "every line of the newer writer acknowledged")

        var expected: [String: String] = [:]
        for (k, id) in a.lines.enumerated() { expected[id] = sentA[k] }
        for (k, id) in b.lines.enumerated() { expected[id] = sentB[k] }
        #expect(a.lines.count >= 200 && a.lines.count < 400, "older writer: \(a.lines.count) acknowledged")

        let r = try Child(["wal", "read", "--data-dir", dir, "--log", "shared", "--metadata", url])
        Self.endInput(r)
        #expect(r.finish() == 0, "wal read: \(r.stderr)")
        var got: [String: String] = [:]
        for line in r.lines {
            guard let tab = line.firstIndex(of: "\t") else { continue }
            got[String(line[..<tab])] = String(line[line.index(after: tab)...])
        }
        let missing = expected.filter { got[$0.key] != $0.value }
        #expect(missing.isEmpty, "printed ids not read back with their payload: \(missing.prefix(5)) of \(missing.count)")
        #expect(got.count >= expected.count)
    }

    /// An unreachable etcd: `wal append` fails at startup naming the endpoint.
    @Test(.enabled(if: woodpeckerBinary != nil, "build the CLI first"))
    func unreachableEtcdFailsAtStartupNamingTheEndpoint() throws {
        let port = try walFreePort()
        let dir = NSTemporaryDirectory() + "wp-wal-noetcd-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try Child(["wal", "append", "--data-dir", dir, "--log", "x", "--metadata", "etcd://127.0.0.1:\(port)/p"])
        Self.endInput(c)
        #expect(Self.exits(c, within: 15_000))
        #expect(c.finish() != 0)
        #expect(c.stderr.contains("127.0.0.1:\(port)") && c.stderr.contains("metadataUnavailable"), "\(c.stderr)")
    }
}
