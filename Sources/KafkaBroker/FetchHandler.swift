import KafkaProtocol
import WoodpeckerCore

extension Broker {
    /// Fetch v4-12: whole batches from the requested offsets, never past the high watermark; long-polls until
    /// `min_bytes` are available or `max_wait_ms` passes (woken by appends). Fetch sessions are not kept
    /// (session_id 0), which Kafka allows.
    func fetch(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(FetchRequest.self, r)
        let deadline = Clock.monotonicMillis() + UInt64(max(0, min(Int(req.maxWaitMs), 30_000)))
        let maxBytes = min(req.maxBytes > 0 ? Int(req.maxBytes) : Int.max, config.fetchMaxBytes)
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
        // Reserved from the broker's fetch budget once there is data to read; held, at the response's size, until
        // the response has been written to the socket (a consumer that pipelines fetches and reads slowly would
        // otherwise have every response it asked for queued in the broker).
        var reserved = 0
        var starved = false
        var handedOver = false
        defer { if reserved > 0 && !handedOver { fetchMemory.release(reserved) } }
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
                } else if s.offset < state.0 && total < maxBytes && !starved {
                    if reserved == 0 {
                        let want = min(maxBytes, slots.reduce(0) { $0 + max(1, $1.max) })
                        let now = Clock.monotonicMillis()
                        if await fetchMemory.reserve(want, timeoutMs: max(deadline > now ? deadline - now : 0, 100)) {
                            reserved = want
                        } else {
                            starved = true  // answered without records; the client fetches again
                            response.responses[s.t].partitions[s.p] = data
                            continue
                        }
                    }
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
            if total >= max(1, Int(req.minBytes)) || now >= deadline || starved { break }
            await appendSignal.wait(timeoutMs: deadline - now)
        }
        // The frame holds the records plus a few dozen bytes per partition: sized up front, not grown by doubling.
        let overhead = 256 + req.topics.reduce(0) { $0 + $1.topic.utf8.count + 16 + 64 * $1.partitions.count }
        let frame = KafkaHeaders.responseFrame(response, correlationId: r.correlationId, version: r.version,
                                               capacity: total + overhead)
        guard reserved > 0 else { return .respond(frame) }
        let held = min(reserved, frame.readableBytes)
        if reserved > held { fetchMemory.release(reserved - held) }
        handedOver = true
        let budget = fetchMemory
        return .respond(frame, onSent: { budget.release(held) })
    }
}
