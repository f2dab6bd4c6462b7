import Testing
import WoodpeckerCore
@testable import WoodpeckerIO

@Suite(.timeLimit(.minutes(1))) struct TimerTests {
    @Test func fireOnceRepeatAndCancel() async throws {
        let loop = EventLoop(name: "timers")
        let counts = Shared((once: 0, repeating: 0, cancelled: 0))
        try await Task(executorPreference: loop) {
            let once = LoopTimer(loop: loop) { counts.with { $0.once += 1 } }
            let rep = LoopTimer(loop: loop) { counts.with { $0.repeating += 1 } }
            let cancelled = LoopTimer(loop: loop) { counts.with { $0.cancelled += 1 } }
            once.start(afterMs: 10)
            rep.start(afterMs: 10, repeatMs: 10)
            cancelled.start(afterMs: 20)
            #expect(cancelled.isActive)
            cancelled.stop()
            #expect(!cancelled.isActive)
            try await Task.sleep(nanoseconds: 0)
            await loop.sleep(ms: 105)
            #expect(!once.isActive)
            #expect(rep.isActive)
            rep.stop()
            let afterStop = counts.value.repeating
            await loop.sleep(ms: 40)
            #expect(counts.value.repeating == afterStop)
            once.close()
            rep.close()
            cancelled.close()
        }.value
        let c = counts.value
        #expect(c.once == 1)
        #expect(c.repeating >= 2 && c.repeating <= 11)  // libuv skips missed repeats on a busy machine
        #expect(c.cancelled == 0)
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    /// An owner that drops an armed timer (an abandoned writer) must not leave libuv calling freed memory: the
    /// timer still fires once, then releases itself and its handle (this crashed the test process before).
    @Test func anArmedTimerWhoseOwnerLetGoStillFiresSafely() async throws {
        let loop = EventLoop(name: "orphan-timer")
        let fired = Shared(0)
        await Task(executorPreference: loop) {
            for _ in 0..<50 {
                let t = LoopTimer(loop: loop) { fired.with { $0 += 1 } }
                t.start(afterMs: 5)
            }
            await loop.sleep(ms: 60)
        }.value
        #expect(fired.value == 50)
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    @Test func scheduleRunsOnceOnTheLoop() async throws {
        let loop = EventLoop(name: "sched")
        let hits = Shared([Bool]())
        loop.schedule(afterMs: 5) { hits.with { $0.append(loop.inLoop) } }
        #expect(await eventually { hits.value.count == 1 })
        try await Task.sleep(nanoseconds: 30_000_000)
        #expect(hits.value == [true])
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }
}
