import Testing
import Woodpecker
import WoodpeckerCore

@Suite struct WALTailCacheTests {
    /// The logs of one client share one tail-cache budget: past it the blocks published longest ago go first,
    /// whichever log holds them, and a log whose blocks were evicted still reads everything back from storage.
    @Test(arguments: [StoreKind.memory, .segments])
    func logsShareOneBudgetAndTheOldestBlocksGoFirst(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let limit = 64 * 1024
            let client = env.client(WALConfig.test.with { $0.tailCacheBytes = limit })
            var logs: [Log] = []
            var written: [[String]] = []
            for name in ["older", "middle", "newest"] {
                let log = try await client.createLog(name)
                let w = try await log.openWriter()
                var payloads: [String] = []
                for i in 0..<100 {
                    let p = "\(name)-\(i)-" + String(repeating: "x", count: 1000)
                    _ = try await w.append(bytes(p))  // one at a time: one block each
                    payloads.append(p)
                }
                try await w.close()
                logs.append(log)
                written.append(payloads)
                #expect(client.tailCacheBytesInUse <= limit, "\(client.tailCacheBytesInUse) bytes cached after \(name)")
            }
            #expect(client.tailCacheBytesInUse > limit / 2, "the budget should be in use, not emptied")
            #expect(await logs[0].cachedBlockCount == 0, "the oldest log's blocks go first")
            #expect(await logs[1].cachedBlockCount == 0)
            #expect(await logs[2].cachedBlockCount > 30, "the newest log keeps the budget")
            var held = 0
            for log in logs { held += await log.cachedPayloadBytes }
            // Evicted blocks release their entries at once (they stayed alive until the cache array was compacted:
            // 100,990 bytes here against a 65,536-byte budget).
            #expect(held <= limit, "\(held) payload bytes kept alive by the tail caches")
            for (log, payloads) in zip(logs, written) {
                #expect(try await readAll(log).map { text($0.payload) } == payloads, "log \(log.name) reads back whole")
            }
            try await client.deleteLog("newest")
            #expect(client.tailCacheBytesInUse == 0, "a deleted log's cache is released")
        }
    }
}
