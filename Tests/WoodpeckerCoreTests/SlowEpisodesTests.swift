import Testing
import WoodpeckerCore

@Suite struct SlowEpisodesTests {
    @Test func bunchedSlowOperationsFormOneEpisodeEach() {
        let ms: UInt64 = 1_000_000
        // Two stalls 1.7 s apart (out of order on input), and one lone slow operation.
        let slow: [(startNs: UInt64, latencyNs: UInt64)] = [
            (1_702 * ms, 9 * ms), (1_700 * ms, 12 * ms), (1_701 * ms, 11 * ms),
            (100 * ms, 17 * ms), (101 * ms, 16 * ms), (130 * ms, 5 * ms),
            (3_400 * ms, 6 * ms),
        ]
        let e = SlowEpisode.group(slow, gapNs: 50 * ms)
        #expect(e == [
            SlowEpisode(startNs: 100 * ms, spanNs: 30 * ms, count: 3, maxLatencyNs: 17 * ms),
            SlowEpisode(startNs: 1_700 * ms, spanNs: 2 * ms, count: 3, maxLatencyNs: 12 * ms),
            SlowEpisode(startNs: 3_400 * ms, spanNs: 0, count: 1, maxLatencyNs: 6 * ms),
        ])
        #expect(SlowEpisode.medianIntervalNs(e) == 1_700 * ms)
        #expect(SlowEpisode.group([], gapNs: ms).isEmpty)
        #expect(SlowEpisode.medianIntervalNs(Array(e.prefix(1))) == nil)
    }
}
