import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerStorage

@Suite struct WALLogLifecycleTests {
    @Test(arguments: StoreKind.objectLayouts)  // inspects or injects faults into block objects
    func createOpenListDelete(_ kind: StoreKind) async throws {
        try await withWAL(kind) { env in
            let client = env.client()
            let a = try await client.createLog("alpha")
            let b = try await client.createLog("beta")
            #expect(a.logId != b.logId)
            #expect(try await client.listLogs() == ["alpha", "beta"])
            #expect(try await client.logExists("alpha"))
            #expect(try await !client.logExists("gamma"))
            // Opening returns the same log (same object within a client).
            let a2 = try await client.openLog("alpha")
            #expect(a2 === a)
            _ = await expectWoodpeckerError(.logNotFound) { _ = try await client.openLog("gamma") }
            _ = await expectWoodpeckerError(.logAlreadyExists) { try await client.createLog("alpha") }
            _ = await expectWoodpeckerError(.invalidArgument) { try await client.createLog("a/b") }
            _ = await expectWoodpeckerError(.invalidArgument) { try await client.createLog("") }

            // Give alpha data, then delete it: objects and metadata go, beta is untouched.
            let w = try await a.openWriter()
            for i in 0..<5 { _ = try await w.append(bytes("a\(i)")) }
            try await w.close()
            let wb = try await b.openWriter()
            _ = try await wb.append(bytes("b0"))
            try await wb.close()
            #expect(try await !env.store.listAll(prefix: "\(a.logId)/").isEmpty)
            try await client.deleteLog("alpha")
            #expect(try await env.store.listAll(prefix: "\(a.logId)/").isEmpty)
            #expect(try await client.listLogs() == ["beta"])
            _ = await expectWoodpeckerError(.logNotFound) { _ = try await client.openLog("alpha") }
            try await client.deleteLog("alpha")  // idempotent
            #expect(try await readAll(b).map { text($0.payload) } == ["b0"])

            // The name can be reused; the new log is empty and has a fresh id.
            let again = try await client.createLog("alpha")
            #expect(again.logId != a.logId)
            #expect(try await readAll(again).isEmpty)

            // A brand-new client sees the same logs.
            try await env.restart()
            let other = env.client()
            #expect(try await other.listLogs() == ["alpha", "beta"])
            #expect(try await other.openLog("beta").logId == b.logId)
            let o = try await other.openOrCreateLog("delta")
            #expect(try await other.openOrCreateLog("delta").logId == o.logId)
        }
    }
}
