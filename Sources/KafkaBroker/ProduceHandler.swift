import KafkaProtocol
import WoodpeckerCore

extension Broker {
    /// Produce v3-11: validate each partition's batch, assign offsets in request order, answer after durability
    /// (acks 1/-1) or not at all (acks 0). v0-2 are advertised for old clients' feature probes and refused.
    func produce(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let order = r.produceOrder
        defer { if let order, !order.assigned.isFulfilled { order.assigned.fulfill(()) } }
        let req = try decode(ProduceRequest.self, r)
        if let after = order?.after { await after.value }

        var pending: [(topic: Int, partition: Int32, promise: Promise<PartitionLog.ProduceResult>)] = []
        var response = ProduceResponse()
        for (ti, t) in req.topicData.enumerated() {
            response.responses.append(.init(name: t.name, partitionResponses: []))
            for p in t.partitionData {
                let immediate = await admit(r, req, topic: t.name, partition: p)
                switch immediate {
                case let .left(result):
                    pending.append((ti, p.index, Promise(result)))
                case let .right(promise):
                    pending.append((ti, p.index, promise))
                }
            }
        }
        order?.assigned.fulfill(())
        if req.acks == 0 { return .noResponse }
        for (ti, index, promise) in pending {
            let res = await promise.value
            if res.error != .none {
                Diagnostics.debug("produce \(req.topicData[ti].name)-\(index): \(res.error) \(res.message ?? "")")
            }
            response.responses[ti].partitionResponses.append(.init(
                index: index, errorCode: res.error.rawValue, baseOffset: res.baseOffset,
                logAppendTimeMs: res.logAppendTimeMs, logStartOffset: res.logStartOffset,
                errorMessage: res.error == .none ? nil : res.message))
        }
        return respond(response, r)
    }

    private enum Either<L, R> {
        case left(L)
        case right(R)
    }

    /// Checks one partition's records and submits them; an error result is returned at once.
    private func admit(_ r: KafkaRequest, _ req: ProduceRequest, topic: String,
                       partition p: ProduceRequest.PartitionProduceData) async -> Either<PartitionLog.ProduceResult, Promise<PartitionLog.ProduceResult>> {
        typealias Result = PartitionLog.ProduceResult
        if r.version < 3 {
            return .left(Result(error: .unsupportedVersion, message: "Produce v\(r.version) (message format < 2) is not supported; use v3+"))
        }
        guard req.acks == 0 || req.acks == 1 || req.acks == -1 else { return .left(Result(error: .invalidRequiredAcks)) }
        if req.transactionalId != nil {
            return .left(Result(error: .transactionalIdAuthorizationFailed, message: "transactions are not supported"))
        }
        let topicRecord: TopicRecord?
        let partition: PartitionLog?
        do {
            topicRecord = try await topics.topic(topic)
            partition = try await topics.partition(topic, p.index)
        } catch {
            return .left(Result(error: .kafkaStorageError, message: "\(error)"))
        }
        guard let topicRecord, let partition else { return .left(Result(error: .unknownTopicOrPartition)) }
        guard let records = p.records, records.readableBytes > 0 else {
            return .left(Result(error: .invalidRecord, message: "empty records"))
        }
        let maxBytes = Int(config.topicConfig("max.message.bytes", of: topicRecord) ?? "") ?? 1_048_588
        if records.readableBytes > maxBytes {
            return .left(Result(error: .messageTooLarge, message: "\(records.readableBytes) bytes > max.message.bytes \(maxBytes)"))
        }
        let batch: RecordBatch
        do {
            let batches = try RecordBatch.split(records)
            // As Kafka (ProduceRequest.validateRecords): one batch per partition, so a partition's part of a request
            // is written whole or not at all, and a retry cannot duplicate a part that was written.
            guard batches.count == 1 else {
                return .left(Result(error: .invalidRecord,
                                    message: "Produce v3+ carries exactly one record batch per partition; this one carries \(batches.count)"))
            }
            batch = batches[0]
            try batch.validate()
            if batch.header.isTransactional || batch.header.isControl {
                return .left(Result(error: .invalidRecord, message: "transactional and control batches are not supported"))
            }
            // `validate` parses records only when uncompressed; a compressed batch must decompress and hold
            // exactly `recordsCount` records too, or consumers would fail on it later (Kafka checks the same).
            if batch.header.compression != CompressionCodec.none {
                _ = try batch.records()
            }
        } catch {
            return .left(Result(error: error.kafkaErrorCode, message: error.message))
        }
        let appendTime = config.topicConfig("message.timestamp.type", of: topicRecord) == "LogAppendTime"
        return .right(await partition.submit(batch, logAppendTime: appendTime))
    }
}
