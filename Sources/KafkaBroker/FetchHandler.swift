import KafkaProtocol
import WoodpeckerCore

extension Broker {
    /// Fetch v4-12: whole batches from the requested offsets, never past the high watermark; long-polls until
    /// `min_bytes` are available or `max_wait_ms` passes (woken by appends). Fetch sessions are not kept
    /// (session_id 0), which Kafka allows.
    func fetch(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(FetchRequest.self, r)
        let deadline = Clock.monotonicMillis() + UInt64(max(0, min(Int(req.maxWaitMs), 30_000)))
        let maxBytes = req.maxBytes > 0 ? Int(req.maxBytes) : Int.max
        var response = FetchResponse()
        // Resolve partitions once.
        var slots: [(t: Int, p: Int, log: PartitionLog?, offset: Int64, max: Int)] = []
        for (ti, t) in req.topics.enumerated() {
            response.responses.append(.init(topic: t.topic, topicId: t.topicId, partitions: []))
            for (pi, p) in t.partitions.enumerated() {
                let opened = await topics.partitionOrError(t.topic, p.partition)
                let log = try? opened.get()  // the error is answered in this partition's slot just below
                var data = FetchResponse.PartitionData(partitionIndex: p.partition)
                data.abortedTransactions = []
                data.records = ByteBuffer()
                data.preferredReadReplica = -1
                if case let .failure(code) = opened { data.errorCode = code.rawValue }
                response.responses[ti].partitions.append(data)
                slots.append((ti, pi, log, p.fetchOffset, Int(p.partitionMaxBytes)))
            }
        }
        var total = 0
        while true {
            for (i, s) in slots.enumerated() {
                guard let log = s.log else { continue }
                let state = await (log.highWatermark, log.logStartOffset)
                var data = response.responses[s.t].partitions[s.p]
                data.highWatermark = state.0
                data.lastStableOffset = state.0
                data.logStartOffset = state.1
                if s.offset < state.1 || s.offset > state.0 {
                    data.errorCode = KafkaErrorCode.offsetOutOfRange.rawValue
                } else if s.offset < state.0 && total < maxBytes {
                    let budget = min(s.max, maxBytes - total)
                    do {
                        let batches = try await log.read(from: s.offset, maxBytes: max(budget, 1))
                        var records = data.records ?? ByteBuffer()
                        for b in batches {
                            // The first batch of the response goes out even if larger than the budget.
                            if total > 0 && total + b.readableBytes > maxBytes { break }
                            records.writeBuffer(b)
                            total += b.readableBytes
                        }
                        data.records = records
                        if let last = batches.last, let h = try? RecordBatchHeader(parsing: last) {
                            slots[i].offset = h.lastOffset + 1
                        }
                    } catch {
                        data.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                        Diagnostics.warn("fetch \(req.topics[s.t].topic)-\(data.partitionIndex) at \(s.offset): \(error)")
                    }
                }
                response.responses[s.t].partitions[s.p] = data
            }
            let now = Clock.monotonicMillis()
            if total >= max(1, Int(req.minBytes)) || now >= deadline { break }
            await appendSignal.wait(timeoutMs: deadline - now)
        }
        return respond(response, r)
    }
}
