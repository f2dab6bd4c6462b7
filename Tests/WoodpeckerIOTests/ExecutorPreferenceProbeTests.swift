import Testing
import Synchronization

final class OffCounter: Sendable {
    let n = Atomic<Int>(0)
    func add() { n.add(1, ordering: .relaxed) }
}
import WoodpeckerIO

/// An actor on a loop that chains tasks the way a LogStore segment's `FileQueue` does.
actor ProbeActor {
    let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(loop: EventLoop) { self.loop = loop }
    var tail: Task<Void, Never>?
    func chain(_ off: OffCounter) async {
        let previous = tail
        let loop = loop
        let t = Task<Void, Never>(executorPreference: loop) {
            await previous?.value
            if !loop.inLoop { off.add() }
            _ = try? await loop.runBlocking { 1 }
            if !loop.inLoop { off.add() }
        }
        tail = t
        await t.value
        if !loop.inLoop { off.add() }
    }
}

/// Loop-confined state reached from tasks with the loop as executor preference (the LogStore's `FileQueue`,
/// `PendingAppends`) is only safe if every continuation of such a task runs on the loop: after awaiting another
/// task's value, after `runBlocking`, and in an actor method on the loop after awaiting a task. Checked many times
/// over with concurrent chains.
@Suite struct ExecutorPreferenceProbeTests {
    @Test func continuationsStayOnTheLoop() async throws {
        let loop = EventLoop(name: "probe")
        defer { loop.shutdown() }
        let a = ProbeActor(loop: loop)
        let off = OffCounter()
        for _ in 0..<200 {
            await withTaskGroup(of: Void.self) { g in
                for _ in 0..<50 { g.addTask(executorPreference: loop) { await a.chain(off) } }
            }
        }
        #expect(off.n.load(ordering: .relaxed) == 0)
    }
}
