import Foundation
import KafkaBroker
import KafkaProtocol
import Testing
import Woodpecker
import WoodpeckerCore

/// retention.ms / retention.bytes truncate whole completed segments through the WAL, advance the log start
/// offset, and never touch the active segment or what is still retained.
@Suite(.timeLimit(.minutes(2))) struct RetentionTests {
    static var smallSegments: WALConfig {
        var w = WALConfig()
        w.segmentMaxBytes = 2_000  // a few batches per segment
        w.auditIntervalMs = 0
        return w
    }

    @Test func retentionMsDropsOldSegmentsAndAdvancesTheLogStart() async throws {
        try await withBroker(wal: Self.smallSegments, { $0.retentionCheckIntervalMs = 100 }) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("ret-ms", configs: ["retention.ms": "60000"]).errorCode == 0)
            // 20 batches with 2023 timestamps (past retention), then 5 with the current time (kept).
            for i in 0..<20 {
                let r = try await c.produce("ret-ms", makeBatch(count: 5, prefix: "b\(i)", valueSize: 100).bytes)
                #expect(r.errorCode == 0)
            }
            for i in 0..<5 {
                let r = try await c.produce("ret-ms", makeBatch(count: 5, prefix: "n\(i)", baseTimestamp: Clock.wallMillis(),
                                                                valueSize: 100).bytes)
                #expect(r.errorCode == 0)
            }
            let hw = try await c.highWatermark("ret-ms")
            #expect(hw == 125)
            // Retention passes run every 100 ms and may take the old segments over several passes: wait until the
            // log start has moved and then held for 4 reads (a fetch at a start read mid-way could be cut next).
            var start: Int64 = 0
            var steady = 0
            for _ in 0..<200 {
                let now = try await c.listOffset("ret-ms", timestamp: -2).offset
                steady = now > 0 && now == start ? steady + 1 : 0
                start = now
                if steady >= 4 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(start > 0 && start <= 100, "log start offset moved past old segments only (got \(start))")
            #expect(start % 5 == 0, "retention cuts at batch (segment) boundaries")
            #expect(try await c.highWatermark("ret-ms") == 125)
            let gone = try await c.fetch("ret-ms", offset: 0)
            #expect(gone.errorCode == KafkaErrorCode.offsetOutOfRange.rawValue)
            let kept = try await c.fetch("ret-ms", offset: start)
            #expect(kept.errorCode == 0)
            #expect(try batches(kept.records).first?.header.baseOffset == start)
        }
    }

    @Test func retentionBytesKeepsTheNewestSegments() async throws {
        try await withBroker(wal: Self.smallSegments, { $0.retentionCheckIntervalMs = 100 }) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("ret-bytes", configs: ["retention.bytes": "3000", "retention.ms": "-1"]).errorCode == 0)
            for i in 0..<30 {
                _ = try await c.produce("ret-bytes", makeBatch(count: 2, prefix: "b\(i)", baseTimestamp: Int64(Clock.wallMillis()),
                                                               valueSize: 200).bytes)
            }
            var start: Int64 = 0
            var steady = 0
            for _ in 0..<200 {  // until the log start has moved and held for 4 reads (see above)
                let now = try await c.listOffset("ret-bytes", timestamp: -2).offset
                steady = now > 0 && now == start ? steady + 1 : 0
                start = now
                if steady >= 4 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(start > 0, "old segments beyond retention.bytes were dropped")
            // What remains is readable from the new start to the end.
            var offset = start
            var seen = 0
            while offset < 60 {
                let p = try await c.fetch("ret-bytes", offset: offset)
                let bs = try batches(p.records)
                guard let last = bs.last else { break }
                seen += bs.reduce(0) { $0 + Int($1.header.recordsCount) }
                offset = last.header.lastOffset + 1
            }
            #expect(offset == 60)
            #expect(seen == Int(60 - start))
        }
    }
}
