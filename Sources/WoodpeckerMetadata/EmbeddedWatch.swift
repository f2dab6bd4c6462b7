import WoodpeckerCore

/// A watch on an `EmbeddedMetadataStore`. The stream ends when `cancel()` is called, when the consumer stops
/// iterating, when the store closes (with `.clientClosed`) or when the consumer falls more than the store's
/// `watchBufferEvents` behind (with retryable `.bufferFull`: re-watch from the last revision seen).
public final class EmbeddedWatch: MetadataWatch {
    public let events: AsyncThrowingStream<WatchEvent, any Error>
    let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation

    init(bufferEvents: Int) {
        (events, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self,
                                                                bufferingPolicy: .bufferingOldest(bufferEvents))
    }

    public func cancel() { continuation.finish() }
}

/// Recent events, oldest first, for watches that start in the past. Holds whole revisions only: after trimming,
/// every event with revision > `startRevision` is present.
struct EventHistory {
    private var events: [(revision: Int64, event: WatchEvent)] = []
    private var head = 0
    let maxEvents: Int
    /// Watches may start from this revision or later.
    private(set) var startRevision: Int64

    init(maxEvents: Int, startRevision: Int64) {
        self.maxEvents = maxEvents
        self.startRevision = startRevision
    }

    var count: Int { events.count - head }

    mutating func append(_ e: WatchEvent) {
        events.append((e.kv.modRevision, e))
        guard count > maxEvents else { return }
        var drop = head + (count - maxEvents)
        let lastDropped = events[drop - 1].revision
        while drop < events.count, events[drop].revision == lastDropped { drop += 1 }
        head = drop
        startRevision = lastDropped
        if head > 4096 && head * 2 > events.count {
            events.removeFirst(head)
            head = 0
        }
    }

    /// Events with revision in (after, through], oldest first.
    func events(after: Int64, through: Int64) -> ArraySlice<(revision: Int64, event: WatchEvent)> {
        var lo = head
        var hi = events.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if events[mid].revision <= after { lo = mid + 1 } else { hi = mid }
        }
        var end = lo
        while end < events.count, events[end].revision <= through { end += 1 }
        return events[lo..<end]
    }
}
