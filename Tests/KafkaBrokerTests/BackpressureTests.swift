import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct BackpressureTests {
    /// A client that pipelines produce requests and does not read the responses: the broker keeps handling
    /// requests only while the responses fit in bounded buffers, then stops reading the connection. Once the client
    /// reads, every request completes, in order.
    @Test func unreadResponsesStopTheBrokerReading() async throws {
        try await withBroker({ $0.maxInFlightRequestsPerConnection = 8 }) { b in
            let observer = try await b.connect()
            let topic = "t" + String(repeating: "x", count: 248)  // the longest valid name: large responses
            try await observer.createTopic(topic)
            // Each request: one record for the real partition plus 200 entries for a missing partition, so each
            // response is about 58 KB while the stored data is one record per request.
            let padding = ProduceRequest.TopicProduceData(name: topic, partitionData: [.init(index: 999, records: nil)])
            let total = 400
            // The client buffers at most 128 KB itself; the kernel buffers the rest.
            let c = try await b.connect(inboxBytes: 128 * 1024)
            var frames: [ByteBuffer] = []
            for i in 0..<total {
                var req = produceRequest(topic: topic, records: makeBatch(count: 1, prefix: "bp\(i)").bytes)
                req.topicData += Array(repeating: padding, count: 200)
                frames.append(KafkaHeaders.requestFrame(req, version: 8, correlationId: Int32(i), clientId: "bp"))
            }
            let responseSize = ProduceResponse(responses: [.init(name: topic, partitionResponses: [.init()])]
                + Array(repeating: .init(name: topic, partitionResponses: [.init()]), count: 200)).encoded(version: 8).readableBytes
            #expect(responseSize > 50_000)
            for f in frames { await c.writeNoWait(f) }

            // Wait until the broker stops making progress.
            var handled: Int64 = -1
            var stableSince = nowMs()
            let deadline = nowMs() + 20_000
            while nowMs() < deadline {
                let hw = try await observer.highWatermark(topic)
                if hw != handled {
                    handled = hw
                    stableSince = nowMs()
                } else if nowMs() - stableSince > 1_000 {
                    break
                }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            // Bounded: the in-flight limit plus what fits in the write high watermark and the socket buffers
            // (at most a few MB), far below everything that was sent.
            print("backpressure: broker handled \(handled) of \(total) requests while the client read nothing")
            #expect(handled > 0)
            #expect(handled < 250, "the broker handled \(handled) of \(total) requests while the client read nothing")

            // Now read everything: all requests complete, in order, with dense offsets.
            for i in 0..<total {
                let r = try await c.read(ProduceResponse.self, version: 8, correlationId: Int32(i))
                #expect(r.responses.count == 201)
                #expect(r.responses[0].partitionResponses[0].errorCode == 0)
                #expect(r.responses[0].partitionResponses[0].baseOffset == Int64(i))
                #expect(r.responses[1].partitionResponses[0].errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            }
            #expect(try await observer.highWatermark(topic) == Int64(total))
            await c.close()
            await observer.close()
        }
    }
}
