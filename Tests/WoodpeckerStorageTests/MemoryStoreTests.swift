import Testing
import WoodpeckerCore
import WoodpeckerStorage

@Suite struct MemoryStoreTests {
    @Test(arguments: ObjectStoreConformance.Check.allCases)
    func conformance(_ check: ObjectStoreConformance.Check) async throws {
        try await ObjectStoreConformance { MemoryStore() }.run(check)
    }

    @Test func storedBytesAreACopyOfTheCallersBuffer() async throws {
        let s = MemoryStore()
        var b = ByteBuffer(bytes: [1, 2, 3])
        try await s.put("k", b)
        b.setInteger(UInt8(9), at: 0)
        #expect(try await s.get("k").readableBytesArray == [1, 2, 3])
    }
}
