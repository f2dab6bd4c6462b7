import Foundation
import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct IdempotenceTests {
    func initProducerId(_ c: TestClient, version: Int16 = 4) async throws -> (Int64, Int16) {
        var req = InitProducerIdRequest()
        req.transactionalId = nil
        req.transactionTimeoutMs = 60_000
        let r = try await c.call(req, version: version, InitProducerIdResponse.self)
        #expect(r.errorCode == 0)
        return (r.producerId, r.producerEpoch)
    }

    @Test func initProducerIdGivesDistinctIds() async throws {
        try await withBroker { b in
            let c1 = try await b.connect()
            let c2 = try await b.connect()
            var ids: [Int64] = []
            for v: Int16 in [0, 1, 2, 3, 4] {
                let (id, epoch) = try await initProducerId(v % 2 == 0 ? c1 : c2, version: v)
                #expect(id >= 0)
                #expect(epoch == 0)
                ids.append(id)
            }
            #expect(Set(ids).count == ids.count)
            await c1.close()
            await c2.close()
        }
    }

    @Test func retriedBatchReturnsOriginalOffsetAndIsStoredOnce() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("idem")
            let (pid, epoch) = try await initProducerId(c)
            let b0 = makeBatch(count: 5, prefix: "a", producerId: pid, producerEpoch: epoch, baseSequence: 0)
            let b1 = makeBatch(count: 3, prefix: "b", producerId: pid, producerEpoch: epoch, baseSequence: 5)
            #expect(try await c.produce("idem", b0.bytes).baseOffset == 0)
            // Another, non-idempotent producer in between.
            #expect(try await c.produce("idem", makeBatch(count: 2, prefix: "plain").bytes).baseOffset == 5)
            #expect(try await c.produce("idem", b1.bytes).baseOffset == 7)
            // Retries of both batches: success with the original offsets, nothing appended.
            let r0 = try await c.produce("idem", b0.bytes)
            #expect(r0.errorCode == 0)
            #expect(r0.baseOffset == 0)
            let r1 = try await c.produce("idem", b1.bytes)
            #expect(r1.errorCode == 0)
            #expect(r1.baseOffset == 7)
            #expect(try await c.highWatermark("idem") == 10)
            let f = try await c.fetch("idem", offset: 0)
            #expect(try batches(f.records).map(\.header.baseOffset) == [0, 5, 7])
            // The next sequence continues normally.
            let b2 = makeBatch(count: 1, prefix: "c", producerId: pid, producerEpoch: epoch, baseSequence: 8)
            #expect(try await c.produce("idem", b2.bytes).baseOffset == 10)
            await c.close()
        }
    }

    @Test func sequenceGapIsOutOfOrder() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("gap")
            let (pid, epoch) = try await initProducerId(c)
            _ = try await c.produce("gap", makeBatch(count: 5, producerId: pid, producerEpoch: epoch, baseSequence: 0).bytes)
            let r = try await c.produce("gap", makeBatch(count: 2, producerId: pid, producerEpoch: epoch, baseSequence: 10).bytes)
            #expect(r.errorCode == KafkaErrorCode.outOfOrderSequenceNumber.rawValue)
            #expect(try await c.highWatermark("gap") == 5)
            // A batch overlapping the previous one without matching it is not a duplicate either.
            let overlap = try await c.produce("gap", makeBatch(count: 2, producerId: pid, producerEpoch: epoch, baseSequence: 3).bytes)
            #expect(overlap.errorCode == KafkaErrorCode.outOfOrderSequenceNumber.rawValue)
            #expect(try await c.highWatermark("gap") == 5)
            await c.close()
        }
    }

    @Test func staleEpochIsRejected() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("epoch")
            let (pid, _) = try await initProducerId(c)
            _ = try await c.produce("epoch", makeBatch(count: 2, producerId: pid, producerEpoch: 1, baseSequence: 0).bytes)
            let stale = try await c.produce("epoch", makeBatch(count: 2, producerId: pid, producerEpoch: 0, baseSequence: 2).bytes)
            #expect(stale.errorCode == KafkaErrorCode.invalidProducerEpoch.rawValue)
            // A new epoch must start at sequence 0.
            let bad = try await c.produce("epoch", makeBatch(count: 2, producerId: pid, producerEpoch: 2, baseSequence: 2).bytes)
            #expect(bad.errorCode == KafkaErrorCode.outOfOrderSequenceNumber.rawValue)
            let ok = try await c.produce("epoch", makeBatch(count: 2, producerId: pid, producerEpoch: 2, baseSequence: 0).bytes)
            #expect(ok.errorCode == 0 && ok.baseOffset == 2)
            #expect(try await c.highWatermark("epoch") == 4)
            await c.close()
        }
    }

    @Test func retryOfAnUnacknowledgedBatchWaitsForTheOriginal() async throws {
        let gated = Shared<GatedStore?>(nil)
        try await withBroker(store: { inner in
            let g = GatedStore(inner)
            gated.with { $0 = g }
            return g
        }) { b in
            let store = try #require(gated.value)
            let a = try await b.connect()
            let retrying = try await b.connect()
            let observer = try await b.connect()
            try await a.createTopic("inflight")
            let (pid, epoch) = try await initProducerId(a)
            _ = try await a.produce("inflight", makeBatch(count: 2, producerId: pid, producerEpoch: epoch, baseSequence: 0).bytes)
            // Hold the next append before it is durable.
            store.held.with { $0 = true }
            let batch = makeBatch(count: 3, prefix: "slow", producerId: pid, producerEpoch: epoch, baseSequence: 2)
            let originalId = try await a.send(produceRequest(topic: "inflight", records: batch.bytes), version: 9)
            let deadline = nowMs() + 5_000
            while store.waitingPuts.value == 0 && nowMs() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
            #expect(store.waitingPuts.value > 0)
            // The producer retries on another connection (e.g. after a timeout): same pid/epoch/sequence.
            let retryId = try await retrying.send(produceRequest(topic: "inflight", records: batch.bytes), version: 9)
            let answeredAt = Shared<UInt64>(0)
            let early = Task {
                let r = try await retrying.read(ProduceResponse.self, version: 9, correlationId: retryId)
                answeredAt.with { $0 = nowMs() }
                return r
            }
            try await Task.sleep(nanoseconds: 400_000_000)
            // Not durable yet: nobody may be told it succeeded.
            #expect(answeredAt.value == 0, "the retry was acknowledged before the original append was durable")
            #expect(try await observer.highWatermark("inflight") == 2)
            store.held.with { $0 = false }
            let retry = try await early.value
            let original = try await a.read(ProduceResponse.self, version: 9, correlationId: originalId)
            #expect(original.responses[0].partitionResponses[0].baseOffset == 2)
            #expect(retry.responses[0].partitionResponses[0].errorCode == 0)
            #expect(retry.responses[0].partitionResponses[0].baseOffset == 2)
            #expect(try await a.highWatermark("inflight") == 5)
            await a.close()
            await retrying.close()
            await observer.close()
        }
    }

    @Test func duplicateIsRecognisedAfterRestart() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var pid: Int64 = -1
        try await withBroker(dir: dir) { b in
            let c = try await b.connect()
            try await c.createTopic("restart")
            (pid, _) = try await initProducerId(c)
            let first = makeBatch(count: 4, prefix: "r0", producerId: pid, producerEpoch: 0, baseSequence: 0)
            let last = makeBatch(count: 3, prefix: "r1", producerId: pid, producerEpoch: 0, baseSequence: 4)
            #expect(try await c.produce("restart", first.bytes).baseOffset == 0)
            #expect(try await c.produce("restart", last.bytes).baseOffset == 4)
            await c.close()
        }
        try await withBroker(dir: dir) { b in
            let c = try await b.connect()
            let last = makeBatch(count: 3, prefix: "r1", producerId: pid, producerEpoch: 0, baseSequence: 4)
            let retry = try await c.produce("restart", last.bytes)
            #expect(retry.errorCode == 0)
            #expect(retry.baseOffset == 4)
            #expect(try await c.highWatermark("restart") == 7)
            let gap = try await c.produce("restart", makeBatch(count: 1, producerId: pid, producerEpoch: 0, baseSequence: 9).bytes)
            #expect(gap.errorCode == KafkaErrorCode.outOfOrderSequenceNumber.rawValue)
            let next = try await c.produce("restart", makeBatch(count: 1, producerId: pid, producerEpoch: 0, baseSequence: 7).bytes)
            #expect(next.errorCode == 0 && next.baseOffset == 7)
            // Producer ids are never handed out twice, across restarts too.
            let (newPid, _) = try await initProducerId(c)
            #expect(newPid != pid)
            let f = try await c.fetch("restart", offset: 0)
            #expect(try batches(f.records).map(\.header.baseOffset) == [0, 4, 7])
            await c.close()
        }
    }
}
