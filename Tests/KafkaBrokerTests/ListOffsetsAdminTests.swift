@testable import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore
import WoodpeckerIO

@Suite struct ListOffsetsTests {
    /// Three batches of five records: timestamps 1000..1040, 2000..2040 (gzip), 3000..3040.
    func fill(_ c: TestClient, _ topic: String) async throws {
        try await c.createTopic(topic)
        for (i, codec) in [CompressionCodec.none, .gzip, .none].enumerated() {
            let batch = makeBatch(count: 5, prefix: "t\(i)", baseTimestamp: Int64(i + 1) * 1000, timestampStep: 10, compression: codec)
            #expect(try await c.produce(topic, batch.bytes).baseOffset == Int64(i) * 5)
        }
    }

    @Test func specialTimestamps() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            // Empty partition first.
            try await c.createTopic("empty")
            let e1 = try await c.listOffset("empty", timestamp: -1)
            #expect(e1.errorCode == 0 && e1.offset == 0 && e1.timestamp == -1)
            let e3 = try await c.listOffset("empty", timestamp: -3)
            #expect(e3.offset == -1 && e3.timestamp == -1)

            try await fill(c, "lo")
            let latest = try await c.listOffset("lo", timestamp: -1)
            #expect(latest.errorCode == 0 && latest.offset == 15 && latest.timestamp == -1)
            let earliest = try await c.listOffset("lo", timestamp: -2)
            #expect(earliest.offset == 0 && earliest.timestamp == -1)
            // -3: the record with the largest timestamp (the last record of the last batch).
            let maxTs = try await c.listOffset("lo", timestamp: -3)
            #expect(maxTs.offset == 14)
            #expect(maxTs.timestamp == 3040)
            let unknown = try await c.listOffset("lo", partition: 3, timestamp: -1)
            #expect(unknown.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            await c.close()
        }
    }

    @Test func maxTimestampPicksTheEarliestRecordAmongEqualTimestamps() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("ties")
            // Record 2 of the first batch and record 0 of the second share the largest timestamp 5000.
            let r1 = [Record(offsetDelta: 0, timestampDelta: 0, value: bytes("a")), Record(offsetDelta: 1, timestampDelta: 4000, value: bytes("b")),
                      Record(offsetDelta: 2, timestampDelta: 4000, value: bytes("c"))]
            let r2 = [Record(offsetDelta: 0, timestampDelta: 0, value: bytes("d")), Record(offsetDelta: 1, timestampDelta: -10, value: bytes("e"))]
            _ = try await c.produce("ties", try RecordBatch.build(records: r1, baseTimestamp: 1000).bytes)
            _ = try await c.produce("ties", try RecordBatch.build(records: r2, baseTimestamp: 5000).bytes)
            let m = try await c.listOffset("ties", timestamp: -3)
            #expect(m.offset == 1)
            #expect(m.timestamp == 5000)
            await c.close()
        }
    }

    @Test func byTimestampFindsTheExactRecord() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await fill(c, "ts")
            let cases: [(ts: Int64, offset: Int64, found: Int64)] = [
                (0, 0, 1000), (1000, 0, 1000), (1015, 2, 1020), (1040, 4, 1040), (1041, 5, 2000),
                (2015, 7, 2020),  // inside the gzip batch
                (2020, 7, 2020), (2041, 10, 3000), (3039, 14, 3040), (3040, 14, 3040),
            ]
            for k in cases {
                let r = try await c.listOffset("ts", timestamp: k.ts)
                #expect(r.errorCode == 0)
                #expect(r.offset == k.offset, "timestamp \(k.ts)")
                #expect(r.timestamp == k.found, "timestamp \(k.ts)")
            }
            // Nothing that recent.
            let none = try await c.listOffset("ts", timestamp: 3041)
            #expect(none.errorCode == 0 && none.offset == -1 && none.timestamp == -1)
            // v1 (no leader epoch) gives the same answer.
            let v1 = try await c.listOffset("ts", timestamp: 2015, version: 1)
            #expect(v1.offset == 7 && v1.timestamp == 2020)
            await c.close()
        }
    }

    @Test func v0ReturnsOldStyleOffsets() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await fill(c, "v0")
            for (ts, expected) in [(Int64(-1), [Int64(15)]), (-2, [0])] {
                var req = ListOffsetsRequest()
                req.replicaId = -1
                req.topics = [.init(name: "v0", partitions: [.init(partitionIndex: 0, timestamp: ts, maxNumOffsets: 1)])]
                let r = try await c.call(req, version: 0, ListOffsetsResponse.self)
                let p = try #require(r.topics.first?.partitions.first)
                #expect(p.errorCode == 0)
                #expect(p.oldStyleOffsets == expected, "timestamp \(ts)")
            }
            await c.close()
        }
    }
}

@Suite struct AdminTests {
    func metadata(_ c: TestClient, _ name: String) async throws -> MetadataResponse.MetadataResponseTopic? {
        var req = MetadataRequest()
        req.topics = [.init(topicId: .zero, name: name)]
        req.allowAutoTopicCreation = false
        return try await c.call(req, version: 12, MetadataResponse.self).topics.first
    }

    @Test func createTopics() async throws {
        try await withBroker({ $0.defaultPartitions = 2 }) { b in
            let c = try await b.connect()
            let r = try await c.createTopic("ct", partitions: 3, configs: ["retention.ms": "1000", "max.message.bytes": "5000"])
            #expect(r.errorCode == 0)
            #expect(r.numPartitions == 3)
            #expect(r.replicationFactor == 1)
            #expect(r.topicId != .zero)
            #expect(r.configs?.first { $0.name == "retention.ms" }?.value == "1000")
            #expect(try await metadata(c, "ct")?.partitions.count == 3)
            #expect(try await metadata(c, "ct")?.topicId == r.topicId)

            let again = try await c.createTopic("ct", partitions: 1)
            #expect(again.errorCode == KafkaErrorCode.topicAlreadyExists.rawValue)
            #expect(try await metadata(c, "ct")?.partitions.count == 3)

            #expect(try await c.createTopic("bad name").errorCode == KafkaErrorCode.invalidTopicException.rawValue)
            #expect(try await c.createTopic("badcfg", configs: ["no.such.config": "1"]).errorCode == KafkaErrorCode.invalidConfig.rawValue)
            #expect(try await metadata(c, "badcfg")?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)

            // A replication factor above the one broker: Kafka's INVALID_REPLICATION_FACTOR, saying what to use.
            var rf = CreateTopicsRequest()
            rf.topics = [.init(name: "rf3", numPartitions: 1, replicationFactor: 3, assignments: [], configs: []),
                         .init(name: "rfdefault", numPartitions: 1, replicationFactor: -1, assignments: [], configs: [])]
            let rfr = try await c.call(rf, version: 5, CreateTopicsResponse.self)
            #expect(rfr.topics.map(\.errorCode) == [KafkaErrorCode.invalidReplicationFactor.rawValue, 0])
            #expect(rfr.topics.first?.errorMessage?.contains("use 1 or -1") == true)
            #expect(try await metadata(c, "rf3")?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)

            // -1 partitions: the broker default.
            let dflt = try await c.createTopic("dflt", partitions: -1)
            #expect(dflt.errorCode == 0 && dflt.numPartitions == 2)

            // validate_only: checked, answered, not created.
            var req = CreateTopicsRequest()
            req.validateOnly = true
            req.topics = [.init(name: "dry", numPartitions: 4, replicationFactor: 1, assignments: [], configs: []),
                          .init(name: "ct", numPartitions: 4, replicationFactor: 1, assignments: [], configs: [])]
            let v = try await c.call(req, version: 5, CreateTopicsResponse.self)
            #expect(v.topics.map(\.errorCode) == [0, KafkaErrorCode.topicAlreadyExists.rawValue])
            #expect(v.topics.first?.numPartitions == 4)
            #expect(try await metadata(c, "dry")?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)

            // Older versions decode too.
            var old = CreateTopicsRequest()
            old.topics = [.init(name: "old", numPartitions: 1, replicationFactor: 1, assignments: [], configs: [])]
            let o = try await c.call(old, version: 0, CreateTopicsResponse.self)
            #expect(o.topics.first?.errorCode == 0)
            await c.close()
        }
    }

    @Test func deleteTopicsRemovesTopicAndData() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("del", partitions: 2)
            _ = try await c.produce("del", makeBatch(count: 3, prefix: "old").bytes)
            _ = try await c.produce("del", partition: 1, makeBatch(count: 3, prefix: "old").bytes)
            var req = DeleteTopicsRequest()
            req.topicNames = ["del", "never-existed"]
            req.timeoutMs = 30_000
            let r = try await c.call(req, version: 4, DeleteTopicsResponse.self)
            #expect(r.responses.map(\.errorCode) == [0, KafkaErrorCode.unknownTopicOrPartition.rawValue])
            #expect(try await metadata(c, "del")?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let gone = try await c.fetch("del", offset: 0)
            #expect(gone.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let p = try await c.produce("del", makeBatch(count: 1).bytes)
            #expect(p.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            // A new topic of the same name starts empty: the old data is not readable through it.
            try await c.createTopic("del", partitions: 2)
            for part: Int32 in [0, 1] {
                let f = try await c.fetch("del", partition: part, offset: 0)
                #expect(f.errorCode == 0)
                #expect(f.highWatermark == 0)
                #expect(f.records?.readableBytes == 0)
            }
            // v6: by topic id.
            let id = try #require(try await metadata(c, "del")?.topicId)
            var byId = DeleteTopicsRequest()
            byId.topics = [.init(name: nil, topicId: id)]
            let r6 = try await c.call(byId, version: 6, DeleteTopicsResponse.self)
            #expect(r6.responses.first?.errorCode == 0)
            #expect(r6.responses.first?.name == "del")
            #expect(try await metadata(c, "del")?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            await c.close()
        }
    }

    @Test func createPartitions() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("cp", partitions: 1)
            _ = try await c.produce("cp", makeBatch(count: 2).bytes)
            func grow(_ name: String, to n: Int32, validateOnly: Bool = false) async throws -> CreatePartitionsResponse.CreatePartitionsTopicResult {
                var req = CreatePartitionsRequest()
                req.topics = [.init(name: name, count: n, assignments: nil)]
                req.validateOnly = validateOnly
                req.timeoutMs = 30_000
                return try #require(try await c.call(req, version: 3, CreatePartitionsResponse.self).results.first)
            }
            #expect(try await grow("cp", to: 5, validateOnly: true).errorCode == 0)
            #expect(try await metadata(c, "cp")?.partitions.count == 1)
            #expect(try await grow("cp", to: 3).errorCode == 0)
            #expect(try await metadata(c, "cp")?.partitions.count == 3)
            let p2 = try await c.produce("cp", partition: 2, makeBatch(count: 1).bytes)
            #expect(p2.errorCode == 0 && p2.baseOffset == 0)
            // Existing data is untouched.
            #expect(try await c.highWatermark("cp") == 2)
            #expect(try await grow("cp", to: 2).errorCode == KafkaErrorCode.invalidPartitions.rawValue)
            #expect(try await grow("cp", to: 3).errorCode == KafkaErrorCode.invalidPartitions.rawValue)
            #expect(try await grow("nope", to: 3).errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            await c.close()
        }
    }

    /// Two requests growing one topic at once: each read the count, then wrote its own. The later write won, so a
    /// topic grown to 4 could end with 3 partitions after both had succeeded (partition 3 and its data gone from
    /// view). Now the record is written with a compare on its revision: one grows, the other fails retryably,
    /// and the count never goes down.
    @Test func concurrentGrowthsNeverShrinkATopic() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("race", partitions: 1)
            let topics = b.broker.topics
            var current: Int32 = 1
            for _ in 0..<4 {
                let big = current + 2, small = current + 1
                // Both start on the broker loop in this order, so the second reads the count before the first wrote.
                let first = Task(executorPreference: b.loop) { () -> Bool in
                    (try? await topics.addPartitions("race", to: big)) != nil
                }
                let second = Task(executorPreference: b.loop) { () -> Bool in
                    (try? await topics.addPartitions("race", to: small)) != nil
                }
                let (grewBig, grewSmall) = (await first.value, await second.value)
                #expect(grewBig || grewSmall, "one of two growths must succeed")
                let stored = try #require(try await onLoop(b.loop) { try await topics.topic("race") }).partitions
                #expect(try await metadata(c, "race")?.partitions.count == Int(stored))
                if grewBig { #expect(stored >= big, "a growth to \(big) was acknowledged, the topic has \(stored)") }
                if grewSmall { #expect(stored >= small) }
                #expect(stored > current)
                current = stored
            }
            await c.close()
        }
    }

    @Test func describeConfigs() async throws {
        try await withBroker({ $0.nodeId = 3; $0.staticTopicConfigs = ["segment.bytes"] }) { b in
            let c = try await b.connect()
            try await c.createTopic("dc", configs: ["retention.ms": "1234"])
            var req = DescribeConfigsRequest()
            req.resources = [.init(resourceType: 2, resourceName: "dc", configurationKeys: nil),
                             .init(resourceType: 2, resourceName: "dc", configurationKeys: ["cleanup.policy"]),
                             .init(resourceType: 2, resourceName: "missing", configurationKeys: nil),
                             .init(resourceType: 4, resourceName: "3", configurationKeys: nil)]
            let r = try await c.call(req, version: 4, DescribeConfigsResponse.self)
            #expect(r.results.count == 4)
            let all = r.results[0]
            #expect(all.errorCode == 0)
            let retention = try #require(all.configs.first { $0.name == "retention.ms" })
            #expect(retention.value == "1234")
            #expect(retention.configSource == 1)  // DYNAMIC_TOPIC_CONFIG
            let maxBytes = try #require(all.configs.first { $0.name == "max.message.bytes" })
            #expect(maxBytes.value == "1048588")
            #expect(maxBytes.configSource == 5)  // DEFAULT_CONFIG
            // A default the operator set (here as if by --segment-bytes) is STATIC_BROKER_CONFIG, as in Kafka.
            let segmentBytes = try #require(all.configs.first { $0.name == "segment.bytes" })
            #expect(segmentBytes.configSource == 4)
            #expect(all.configs.first { $0.name == "segment.ms" }?.configSource == 5)
            #expect(Set(all.configs.map(\.name)).isSuperset(of: ["cleanup.policy", "message.timestamp.type", "retention.bytes", "segment.bytes"]))
            #expect(r.results[1].configs.map(\.name) == ["cleanup.policy"])
            #expect(r.results[1].configs.first?.value == "delete")
            #expect(r.results[2].errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let broker = r.results[3]
            #expect(broker.errorCode == 0)
            #expect(broker.configs.first { $0.name == "broker.id" }?.value == "3")
            // v0 decodes too.
            let r0 = try await c.call(req, version: 0, DescribeConfigsResponse.self)
            #expect(r0.results[0].configs.first { $0.name == "retention.ms" }?.isDefault == false)
            #expect(r0.results[0].configs.first { $0.name == "cleanup.policy" }?.isDefault == true)
            await c.close()
        }
    }

    /// A topic's segment.bytes decides when its partitions roll (before, every topic rolled at the broker's
    /// 256 MiB whatever it was created with), and config values the broker cannot honour are refused at creation.
    @Test func topicSegmentSettingsRollItsLogsAndBadValuesAreRefused() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("small", configs: ["segment.bytes": "1048576"]).errorCode == 0)
            #expect(try await c.createTopic("large").errorCode == 0)
            for topic in ["small", "large"] {
                for i in 0..<12 {  // 12 x 256 KiB
                    let r = try await c.produce(topic, makeBatch(count: 1, prefix: "\(topic)\(i)", valueSize: 256 << 10).bytes)
                    #expect(r.errorCode == 0)
                }
            }
            let client = b.broker.client
            let segments = try await onLoop(b.loop) {
                (try await client.openLog("small-0").segmentMetas().count, try await client.openLog("large-0").segmentMetas().count)
            }
            #expect(segments.0 >= 3, "3 MiB at segment.bytes 1 MiB: \(segments.0) segments")
            #expect(segments.1 == 1, "3 MiB at the default 256 MiB: \(segments.1) segments")
            let small = try await c.fetch("small", offset: 0)
            #expect(small.errorCode == 0 && small.highWatermark == 12)
            var req = DescribeConfigsRequest()
            req.resources = ["small", "large"].map { .init(resourceType: 2, resourceName: $0, configurationKeys: ["segment.bytes"]) }
            let described = try await c.call(req, version: 4, DescribeConfigsResponse.self).results.map { $0.configs.first }
            #expect(described[0]?.value == "1048576" && described[0]?.configSource == 1)  // DYNAMIC_TOPIC_CONFIG
            #expect(described[1]?.value == "268435456" && described[1]?.configSource == 5)  // DEFAULT_CONFIG
            for (key, value) in [("segment.bytes", "1000"), ("segment.bytes", "lots"), ("segment.ms", "10"),
                                 ("retention.ms", "-2"), ("message.timestamp.type", "Later"), ("cleanup.policy", "compact")] {
                let r = try await c.createTopic("bad-\(key.replacingOccurrences(of: ".", with: "-"))", configs: [key: value])
                #expect(r.errorCode == KafkaErrorCode.invalidConfig.rawValue, "\(key)=\(value)")
                #expect(r.errorMessage?.contains(key) == true, "\(String(describing: r.errorMessage))")
            }
            await c.close()
        }
    }

    /// IncrementalAlterConfigs and AlterConfigs change a topic's own configs: a new segment.bytes rolls the partition
    /// that is already open, DELETE and omitted configs go back to the broker's default, validateOnly changes
    /// nothing, and bad requests get the error a Kafka client expects.
    @Test func alterConfigsChangeTopicsLive() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("alt").errorCode == 0)
            func produce(_ n: Int, _ tag: String) async throws {
                for i in 0..<n {
                    let r = try await c.produce("alt", makeBatch(count: 1, prefix: "\(tag)\(i)", valueSize: 256 << 10).bytes)
                    #expect(r.errorCode == 0)
                }
            }
            let client = b.broker.client
            func segments() async throws -> Int { try await onLoop(b.loop) { try await client.openLog("alt-0").segmentMetas().count } }
            func described() async throws -> [String: DescribeConfigsResponse.DescribeConfigsResourceResult] {
                var req = DescribeConfigsRequest()
                req.resources = [.init(resourceType: 2, resourceName: "alt", configurationKeys: nil)]
                let configs = try await c.call(req, version: 4, DescribeConfigsResponse.self).results[0].configs
                return Dictionary(uniqueKeysWithValues: configs.map { ($0.name, $0) })
            }
            func incremental(_ ops: [(String, Int8, String?)], name: String = "alt", type: Int8 = 2, validateOnly: Bool = false)
                async throws -> IncrementalAlterConfigsResponse.AlterConfigsResourceResponse
            {
                var req = IncrementalAlterConfigsRequest()
                req.resources = [.init(resourceType: type, resourceName: name,
                                       configs: ops.map { .init(name: $0.0, configOperation: $0.1, value: $0.2) })]
                req.validateOnly = validateOnly
                return try await c.call(req, version: 1, IncrementalAlterConfigsResponse.self).responses[0]
            }

            try await produce(12, "a")
            #expect(try await segments() == 1)
            #expect(try await incremental([("segment.bytes", 0, "1048576"), ("retention.ms", 0, "86400000")]).errorCode == 0)
            var d = try await described()
            #expect(d["segment.bytes"]?.value == "1048576" && d["segment.bytes"]?.configSource == 1)
            #expect(d["retention.ms"]?.value == "86400000")
            try await produce(12, "b")
            #expect(try await segments() >= 3, "the open partition rolls by the new segment.bytes")

            #expect(try await incremental([("retention.ms", 1, nil)]).errorCode == 0)
            d = try await described()
            #expect(d["retention.ms"]?.value == "604800000" && d["retention.ms"]?.configSource == 5)
            #expect(d["segment.bytes"]?.value == "1048576", "a DELETE of one config keeps the others")

            #expect(try await incremental([("max.message.bytes", 0, "100")], validateOnly: true).errorCode == 0)
            #expect(try await described()["max.message.bytes"]?.value == "1048588", "validateOnly changes nothing")

            // AlterConfigs replaces the whole set: segment.bytes goes back to its default.
            var legacy = AlterConfigsRequest()
            legacy.resources = [.init(resourceType: 2, resourceName: "alt", configs: [.init(name: "max.message.bytes", value: "2000")])]
            #expect(try await c.call(legacy, version: 0, AlterConfigsResponse.self).responses[0].errorCode == 0)
            d = try await described()
            #expect(d["max.message.bytes"]?.value == "2000" && d["segment.bytes"]?.configSource == 5)
            let tooLarge = try await c.produce("alt", makeBatch(count: 1, valueSize: 4000).bytes)
            #expect(tooLarge.errorCode == KafkaErrorCode.messageTooLarge.rawValue)

            #expect(try await incremental([("segment.bytes", 0, "10")]).errorCode == KafkaErrorCode.invalidConfig.rawValue)
            #expect(try await incremental([("no.such.config", 0, "1")]).errorCode == KafkaErrorCode.invalidConfig.rawValue)
            #expect(try await incremental([("cleanup.policy", 2, "compact")]).errorCode == KafkaErrorCode.invalidRequest.rawValue)
            #expect(try await incremental([("no.such.config", 1, nil)]).errorCode == KafkaErrorCode.invalidConfig.rawValue)
            #expect(try await incremental([("retention.ms", 0, "1"), ("retention.ms", 1, nil)]).errorCode
                    == KafkaErrorCode.invalidRequest.rawValue)
            #expect(try await incremental([("retention.ms", 0, "1")], name: "missing").errorCode
                    == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            #expect(try await incremental([("log.retention.ms", 0, "1")], name: "0", type: 4).errorCode
                    == KafkaErrorCode.invalidRequest.rawValue)
            #expect(try await described()["max.message.bytes"]?.value == "2000", "refused changes leave the configs alone")
            await c.close()
        }
    }

    /// Topic records stored before topics kept only their own configs held every default too: read back, those
    /// entries are dropped so that the broker's defaults (and its --segment-bytes) apply to old topics.
    @Test func recordsFromBeforeOwnConfigsFollowTheBrokerDefaults() throws {
        let legacy = #"{"name":"old","topicIdHigh":1,"topicIdLow":2,"partitions":1,"createTimeMs":0,"configs":{"retention.ms":"1234","retention.bytes":"-1","max.message.bytes":"1048588","message.timestamp.type":"CreateTime","cleanup.policy":"delete","segment.bytes":"268435456","segment.ms":"600000"}}"#
        let t = try TopicRecord.decoded(Array(legacy.utf8))
        #expect(t.configs == ["retention.ms": "1234"])
        var current = t
        current.configs = ["segment.bytes": "268435456"]  // set on purpose by a record written since
        let again = try TopicRecord.decoded(TopicManager.encode(current))
        #expect(again.configs == ["segment.bytes": "268435456"])
        #expect(SegmentRoll(topicConfigs: ["segment.bytes": "0", "segment.ms": "5000"]) == SegmentRoll(maxBytes: nil, maxAgeMs: 5000),
                "a stored value the broker would refuse is ignored")
    }

    @Test func describeCluster() async throws {
        try await withBroker({ $0.nodeId = 4; $0.clusterId = "test-cluster"; $0.advertisedHost = "broker.example"; $0.advertisedPort = 9999 }) { b in
            let c = try await b.connect()
            for v: Int16 in [0, 1] {
                let r = try await c.call(DescribeClusterRequest(), version: v, DescribeClusterResponse.self)
                #expect(r.errorCode == 0)
                #expect(r.clusterId == "test-cluster")
                #expect(r.controllerId == 4)
                #expect(r.brokers == [.init(brokerId: 4, host: "broker.example", port: 9999, rack: nil)])
            }
            await c.close()
        }
    }
}
