import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct ProduceFetchTests {
    @Test func offsetsAreDenseAndFetchedBytesEqualProducedBytes() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("pf")
            var produced: [RecordBatch] = []
            for i in 0..<3 {
                let batch = makeBatch(count: 5, prefix: "b\(i)", baseTimestamp: 1_700_000_000_000 + Int64(i) * 100)
                produced.append(batch)
                let r = try await c.produce("pf", batch.bytes)
                #expect(r.errorCode == 0)
                #expect(r.baseOffset == Int64(i) * 5)
                #expect(r.logAppendTimeMs == -1)
                #expect(r.logStartOffset == 0)
            }
            let f = try await c.fetch("pf", offset: 0)
            #expect(f.errorCode == 0)
            #expect(f.highWatermark == 15)
            #expect(f.lastStableOffset == 15)
            #expect(f.logStartOffset == 0)
            #expect(f.preferredReadReplica == -1)
            #expect(f.abortedTransactions == [])
            let got = try batches(f.records)
            #expect(got.map(\.header.baseOffset) == [0, 5, 10])
            #expect(got.map(withoutBaseOffset) == produced.map(withoutBaseOffset))
            for g in got { #expect(throws: Never.self) { try g.validate() } }
            #expect(try got[1].records().map { $0.value! } == (0..<5).map { bytes("b1-\($0)") })
            #expect(try await c.highWatermark("pf") == 15)
            #expect(try await c.listOffset("pf", timestamp: -2).offset == 0)
            await c.close()
        }
    }

    @Test func fetchInsideABatchReturnsTheWholeBatch() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("mid")
            for i in 0..<3 { _ = try await c.produce("mid", makeBatch(count: 5, prefix: "m\(i)").bytes) }
            for (offset, firstBase) in [(7, 5), (14, 10), (5, 5), (4, 0)] as [(Int64, Int64)] {
                let f = try await c.fetch("mid", offset: offset)
                let got = try batches(f.records)
                #expect(got.first?.header.baseOffset == firstBase, "fetch at \(offset)")
                #expect(got.last?.header.lastOffset == 14)
            }
            await c.close()
        }
    }

    @Test func firstBatchIsReturnedEvenWhenLargerThanMaxBytes() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("big")
            let big = makeBatch(count: 5, prefix: "big", valueSize: 10_000)
            _ = try await c.produce("big", big.bytes)
            _ = try await c.produce("big", makeBatch(count: 5, prefix: "second", valueSize: 10_000).bytes)
            // Response limit below one batch: exactly the first batch comes back.
            let f1 = try await c.fetch("big", offset: 0, maxBytes: 1_000, partitionMaxBytes: 10 << 20)
            #expect(try batches(f1.records).map(\.header.baseOffset) == [0])
            #expect(f1.records?.readableBytes == big.bytes.readableBytes)
            // Partition limit below one batch: same.
            let f2 = try await c.fetch("big", offset: 0, maxBytes: 50 << 20, partitionMaxBytes: 1_000)
            #expect(try batches(f2.records).map(\.header.baseOffset) == [0])
            // Enough room for both.
            let f3 = try await c.fetch("big", offset: 0, maxBytes: 200_000, partitionMaxBytes: 200_000)
            #expect(try batches(f3.records).map(\.header.baseOffset) == [0, 5])
            await c.close()
        }
    }

    @Test func fetchAtAndBeyondHighWatermark() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("hw")
            _ = try await c.produce("hw", makeBatch(count: 3).bytes)
            let atHW = try await c.fetch("hw", offset: 3)
            #expect(atHW.errorCode == 0)
            #expect(atHW.highWatermark == 3)
            #expect(atHW.records != nil && atHW.records!.readableBytes == 0)
            let beyond = try await c.fetch("hw", offset: 4)
            #expect(beyond.errorCode == KafkaErrorCode.offsetOutOfRange.rawValue)
            #expect(beyond.highWatermark == 3)
            let unknown = try await c.fetch("hw", partition: 5, offset: 0)
            #expect(unknown.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            await c.close()
        }
    }

    @Test func longPollAtHighWatermarkReturnsAfterMaxWait() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("lp")
            _ = try await c.produce("lp", makeBatch(count: 1).bytes)
            let start = nowMs()
            let f = try await c.fetch("lp", offset: 1, maxWaitMs: 600)
            let elapsed = nowMs() - start
            #expect(f.errorCode == 0)
            #expect(f.records?.readableBytes == 0)
            #expect(elapsed >= 550, "returned after \(elapsed) ms")
            #expect(elapsed < 3_000, "returned after \(elapsed) ms")
            await c.close()
        }
    }

    @Test func longPollIsWokenByProduce() async throws {
        try await withBroker { b in
            let consumer = try await b.connect()
            let producer = try await b.connect()
            try await producer.createTopic("wake")
            let req = consumer.fetchRequest("wake", offset: 0, maxWaitMs: 20_000)
            let id = try await consumer.send(req, version: 12)
            try await Task.sleep(nanoseconds: 300_000_000)
            let produced = makeBatch(count: 2, prefix: "wake")
            let sentAt = nowMs()
            let p = try await producer.produce("wake", produced.bytes)
            #expect(p.errorCode == 0)
            let r = try await consumer.read(FetchResponse.self, version: 12, correlationId: id)
            let latency = nowMs() - sentAt
            #expect(latency < 2_000, "fetch answered \(latency) ms after the produce was sent (max wait 20 s)")
            let part = try #require(r.responses.first?.partitions.first)
            #expect(try batches(part.records).map(withoutBaseOffset) == [withoutBaseOffset(produced)])
            await consumer.close()
            await producer.close()
        }
    }

    @Test func acksZeroSendsNoResponse() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("a0")
            try await c.send(produceRequest(topic: "a0", records: makeBatch(count: 2).bytes, acks: 0), version: 9,
                             correlationId: 500)
            // Also an acks=0 produce that fails (unknown partition): still no response.
            try await c.send(produceRequest(topic: "a0", partition: 9, records: makeBatch(count: 2).bytes, acks: 0),
                             version: 9, correlationId: 501)
            let id = try await c.send(MetadataRequest(topics: nil), version: 12, correlationId: 502)
            let m = try await c.read(MetadataResponse.self, version: 12, correlationId: id)
            #expect(m.topics.contains { $0.name == "a0" })
            // The acks=0 data was stored.
            let f = try await c.fetch("a0", offset: 0, maxWaitMs: 5_000)
            #expect(try batches(f.records).first?.header.recordsCount == 2)
            await c.close()
        }
    }

    @Test func pipelinedResponsesComeBackInRequestOrder() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("pipe")
            try await c.createTopic("pipe-idle")
            var frames = ByteBuffer()
            var expected: [(id: Int32, key: ApiKey)] = []
            for i in 0..<50 {
                let id = Int32(1000 + i)
                let key: ApiKey
                switch i % 5 {
                case 0:
                    key = .produce
                    frames.writeBuffer(KafkaHeaders.requestFrame(produceRequest(topic: "pipe", records: makeBatch(count: 2, prefix: "p\(i)").bytes),
                                                                 version: 9, correlationId: id, clientId: "pipe"))
                case 1:
                    key = .metadata
                    frames.writeBuffer(KafkaHeaders.requestFrame(MetadataRequest(topics: nil), version: 12, correlationId: id, clientId: nil))
                case 2:
                    key = .fetch
                    // A short long-poll at the current end delays everything behind it.
                    frames.writeBuffer(KafkaHeaders.requestFrame(c.fetchRequest("pipe-idle", offset: 0, maxWaitMs: 50), version: 12,
                                                                 correlationId: id, clientId: "pipe"))
                case 3:
                    key = .apiVersions
                    frames.writeBuffer(KafkaHeaders.requestFrame(ApiVersionsRequest(), version: 2, correlationId: id, clientId: "pipe"))
                default:
                    key = .listOffsets
                    var lo = ListOffsetsRequest()
                    lo.replicaId = -1
                    lo.topics = [.init(name: "pipe", partitions: [.init(partitionIndex: 0, timestamp: -1)])]
                    frames.writeBuffer(KafkaHeaders.requestFrame(lo, version: 7, correlationId: id, clientId: "pipe"))
                }
                expected.append((id, key))
            }
            try await c.conn.send(frames)
            var produceOffsets: [Int64] = []
            for (id, key) in expected {
                switch key {
                case .produce:
                    let r = try await c.read(ProduceResponse.self, version: 9, correlationId: id)
                    produceOffsets.append(r.responses[0].partitionResponses[0].baseOffset)
                case .metadata: _ = try await c.read(MetadataResponse.self, version: 12, correlationId: id)
                case .fetch: _ = try await c.read(FetchResponse.self, version: 12, correlationId: id)
                case .apiVersions: _ = try await c.read(ApiVersionsResponse.self, version: 2, correlationId: id)
                default: _ = try await c.read(ListOffsetsResponse.self, version: 7, correlationId: id)
                }
            }
            // Produces of one connection get offsets in request order.
            #expect(produceOffsets == (0..<10).map { Int64($0) * 2 })
            await c.close()
        }
    }

    /// Every valid topic name works end to end, including 249-character names (with multi-digit partitions) and
    /// names containing "..", and distinct topics never share data.
    @Test func longAndDottedTopicNamesStoreSeparateData() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let long1 = String(repeating: "l", count: 248) + "1"
            let long2 = String(repeating: "l", count: 248) + "2"
            let names = ["a..b", "..x", long1, long2, "a.b", "a-1"]
            for n in names { #expect(try await c.createTopic(n, partitions: 12).errorCode == 0, "\(n.prefix(20))") }
            for (i, n) in names.enumerated() {
                for p: Int32 in [0, 11] {
                    let r = try await c.produce(n, partition: p, makeBatch(count: i + 1, prefix: "\(i)-\(p)").bytes)
                    #expect(r.errorCode == 0, "\(n.prefix(20))-\(p)")
                    #expect(r.baseOffset == 0)
                }
            }
            for (i, n) in names.enumerated() {
                for p: Int32 in [0, 11] {
                    let got = try batches(try await c.fetch(n, partition: p, offset: 0).records)
                    #expect(got.count == 1, "\(n.prefix(20))-\(p)")
                    #expect(try got.first?.records().map { $0.value! } == (0...i).map { bytes("\(i)-\(p)-\($0)") })
                }
            }
            var del = DeleteTopicsRequest()
            del.topicNames = [long1, "a..b"]
            let r = try await c.call(del, version: 4, DeleteTopicsResponse.self)
            #expect(r.responses.map(\.errorCode) == [0, 0])
            #expect(try await c.highWatermark(long2, partition: 11) == 4)
            #expect(try await c.highWatermark("..x", partition: 11) == 2)
            await c.close()
        }
    }
}
