import WoodpeckerIO

/// One bound on the tail caches of all logs of a client (`WALConfig.tailCacheBytes`).
///
/// Each log keeps recently acknowledged blocks, decoded, for its tail readers. A bound per log would let memory
/// grow with the number of partitions a broker serves (1,000 partitions at 32 MiB each is 32 GiB); instead the
/// logs share one budget and, past it, the blocks published longest ago go first, whichever log holds them: the
/// page cache's policy for a Kafka broker's recent segments. Confined to the client's loop, like the logs.
final class TailBudget: @unchecked Sendable {
    let limit: Int
    private let loop: EventLoop
    /// Bytes of every block now cached by some log.
    private(set) var bytes = 0
    /// Published blocks, oldest first, as (log, sequence number); holds records of blocks a log has dropped on its
    /// own (segment deleted), skipped when reached and swept out once they are the larger part.
    private var order: [(log: Log, seq: UInt64)] = []
    private var head = 0
    private var stale = 0
    private var nextSeq: UInt64 = 0

    init(limit: Int, loop: EventLoop) {
        self.limit = max(0, limit)
        self.loop = loop
    }

    var recordCount: Int { order.count - head }

    /// The sequence number of the next block a log caches.
    func nextSequence() -> UInt64 {
        nextSeq += 1
        return nextSeq
    }

    /// Registers a block `log` has just cached under `seq`. Evicts (possibly from `log`, possibly that very block)
    /// until the budget holds again.
    func published(_ log: Log, seq: UInt64, bytes size: Int) {
        loop.preconditionInLoop()
        order.append((log, seq))
        bytes += size
        evictWhileOver()
    }

    /// A log dropped cached blocks on its own (not through `evictWhileOver`).
    func dropped(blocks: Int, bytes size: Int) {
        bytes -= size
        stale += blocks
        if stale > 64 && stale * 2 > recordCount { sweep() }
    }

    private func evictWhileOver() {
        while bytes > limit && head < order.count {
            let (log, seq) = order[head]
            head += 1
            let freed = log.assumeIsolated { $0.evictCached(seq: seq) }
            if let freed { bytes -= freed } else { stale -= 1 }
        }
        if head > 1024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    /// Removes records of blocks their logs no longer hold.
    private func sweep() {
        order = order[head...].filter { r in r.log.assumeIsolated { $0.holdsCached(seq: r.seq) } }
        head = 0
        stale = 0
    }
}
