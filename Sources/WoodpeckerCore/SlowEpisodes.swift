/// Groups slow operations into episodes, to tell a steady tail (slow operations spread evenly) from stalls (slow
/// operations bunched together, as when one process or the machine stops for a while).
public struct SlowEpisode: Sendable, Equatable {
    /// When the first slow operation of the episode started (ns, on the caller's clock).
    public var startNs: UInt64
    /// From the start of its first operation to the start of its last (0 for a single one).
    public var spanNs: UInt64
    public var count: Int
    public var maxLatencyNs: UInt64

    public init(startNs: UInt64, spanNs: UInt64, count: Int, maxLatencyNs: UInt64) {
        self.startNs = startNs
        self.spanNs = spanNs
        self.count = count
        self.maxLatencyNs = maxLatencyNs
    }

    /// Episodes of `slow` (start time, latency) pairs: operations starting less than `gapNs` after the previous slow
    /// one belong to its episode. Input in any order.
    public static func group(_ slow: [(startNs: UInt64, latencyNs: UInt64)], gapNs: UInt64) -> [SlowEpisode] {
        var out: [SlowEpisode] = []
        var last: UInt64 = 0
        for s in slow.sorted(by: { $0.startNs < $1.startNs }) {
            if var e = out.last, s.startNs - last < gapNs {
                e.spanNs = s.startNs - e.startNs
                e.count += 1
                e.maxLatencyNs = max(e.maxLatencyNs, s.latencyNs)
                out[out.count - 1] = e
            } else {
                out.append(SlowEpisode(startNs: s.startNs, spanNs: 0, count: 1, maxLatencyNs: s.latencyNs))
            }
            last = s.startNs
        }
        return out
    }

    /// Median time between the starts of consecutive episodes (nil with fewer than two).
    public static func medianIntervalNs(_ episodes: [SlowEpisode]) -> UInt64? {
        guard episodes.count >= 2 else { return nil }
        let gaps = zip(episodes.dropFirst(), episodes).map { $0.startNs - $1.startNs }.sorted()
        return gaps[gaps.count / 2]
    }
}
