import Testing
import WoodpeckerCore
@testable import WoodpeckerIO

actor LoopCounter {
    let loop: EventLoop
    var n = 0
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(loop: EventLoop) { self.loop = loop }
    func bump() -> Bool {
        n += 1
        return loop.inLoop
    }
}

@Suite struct EventLoopTests {
    @Test func actorsPinnedToTheLoopRunOnIt() async throws {
        let loop = EventLoop(name: "t1")
        let c = LoopCounter(loop: loop)
        for _ in 0..<100 { #expect(await c.bump()) }
        #expect(await c.n == 100)
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    @Test func taskWithLoopPreferenceResumesOnLoopAfterTimer() async throws {
        let loop = EventLoop(name: "t2")
        let onLoop = await Task(executorPreference: loop) { () -> Bool in
            let start = Clock.monotonicMillis()
            await loop.sleep(ms: 20)
            return loop.inLoop && Clock.monotonicMillis() - start >= 19
        }.value
        #expect(onLoop)
        loop.shutdown()
    }

    @Test func runBlockingLeavesTheLoopFree() async throws {
        let loop = EventLoop(name: "t3")
        let v = try await loop.runBlocking { () -> Bool in
            usleep(20_000)
            return true
        }
        #expect(v)
        await #expect(throws: WoodpeckerError.self) {
            try await loop.runBlocking { () -> Int in throw WoodpeckerError(.ioFailure, "boom") }
        }
        loop.shutdown()
    }
}

#if canImport(Glibc)
import Glibc
#endif
