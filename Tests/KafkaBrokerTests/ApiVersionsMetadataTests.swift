import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct ApiVersionsTests {
    @Test func v3ResponseHasHeaderV0AndNoTaggedFields() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let id = try await c.send(ApiVersionsRequest(clientSoftwareName: "test", clientSoftwareVersion: "1.0"), version: 3)
            var f = try await c.readFrame()
            let all = f.readableBytesArray
            // Header v0: just the correlation id, no tag buffer.
            #expect(try f.readInteger(as: Int32.self) == id)
            #expect(try f.readInteger(as: Int16.self) == 0)
            let n = Int(try f.readUnsignedVarint()) - 1
            #expect(n >= 10)
            var keys: [Int16: [Int16]] = [:]
            for _ in 0..<n {
                let k = try f.readInteger(as: Int16.self)
                let lo = try f.readInteger(as: Int16.self)
                keys[k] = [lo, try f.readInteger(as: Int16.self)]
                #expect(try f.readUnsignedVarint() == 0)  // element tag buffer
            }
            // Tail: throttle_time_ms 0 and an empty top-level tag buffer, nothing after.
            #expect(f.readableBytesArray == [0, 0, 0, 0, 0])
            #expect(Array(all.suffix(5)) == [0, 0, 0, 0, 0])
            #expect(keys[18] == [0, 4])
            #expect(keys[0] == [0, 11])
            #expect(keys[1] == [4, 12])
            #expect(keys[3] == [0, 12])
            // The same bytes decode as a v3 response.
            var again = ByteBuffer(bytes: Array(all.dropFirst(4)))
            let decoded = try ApiVersionsResponse(from: &again, version: 3)
            #expect(again.readableBytes == 0)
            #expect(decoded.apiKeys.count == n)
            await c.close()
        }
    }

    @Test func v0Works() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let id = try await c.send(ApiVersionsRequest(), version: 0)
            var f = try await c.readFrame()
            #expect(try f.readInteger(as: Int32.self) == id)
            #expect(try f.readInteger(as: Int16.self) == 0)
            let n = try f.readInteger(as: Int32.self)
            #expect(f.readableBytes == Int(n) * 6)  // v0: no throttle time, no tags
            let r = try await c.call(ApiVersionsRequest(), version: 0, ApiVersionsResponse.self)
            #expect(r.apiKeys.contains { $0.apiKey == 22 && $0.minVersion == 0 && $0.maxVersion == 4 })
            await c.close()
        }
    }

    @Test func unsupportedVersionGetsError35WithV0BodyListingOnlyKey18() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let id = try await c.send(ApiVersionsRequest(clientSoftwareName: "future", clientSoftwareVersion: "9"), version: 99)
            let f = try await c.readFrame()
            var expected = ByteBuffer()
            expected.writeInteger(id)
            expected.writeInteger(Int16(35))
            expected.writeInteger(Int32(1))
            expected.writeInteger(Int16(18))
            expected.writeInteger(Int16(0))
            expected.writeInteger(Int16(4))
            #expect(f.readableBytesArray == expected.readableBytesArray)
            // The connection stays usable: the client retries at a supported version.
            let r = try await c.call(ApiVersionsRequest(clientSoftwareName: "future", clientSoftwareVersion: "9"),
                                     version: 4, ApiVersionsResponse.self)
            #expect(r.errorCode == 0)
            await c.close()
        }
    }
}

@Suite struct MetadataTests {
    func metadata(_ c: TestClient, _ names: [String]?, version: Int16, allowAuto: Bool = true) async throws -> MetadataResponse {
        var req = MetadataRequest()
        req.topics = names.map { $0.map { MetadataRequest.MetadataRequestTopic(topicId: .zero, name: $0) } }
        req.allowAutoTopicCreation = allowAuto
        return try await c.call(req, version: version, MetadataResponse.self)
    }

    @Test func autoCreatesTopicAndListsSelfAsLeader() async throws {
        try await withBroker({ $0.nodeId = 7; $0.defaultPartitions = 3; $0.advertisedHost = "127.0.0.1"; $0.advertisedPort = 19092 }) { b in
            let c = try await b.connect()
            let r = try await metadata(c, ["auto-topic"], version: 12)
            #expect(r.brokers == [.init(nodeId: 7, host: "127.0.0.1", port: 19092, rack: nil)])
            #expect(r.controllerId == 7)
            #expect(r.clusterId == "woodpecker-cluster")
            let t = try #require(r.topics.first)
            #expect(t.errorCode == 0 && t.name == "auto-topic")
            #expect(t.partitions.map(\.partitionIndex) == [0, 1, 2])
            #expect(t.partitions.allSatisfy { $0.leaderId == 7 && $0.replicaNodes == [7] && $0.isrNodes == [7] && $0.errorCode == 0 })
            // The topic exists afterwards: produce to partition 2 works.
            let p = try await c.produce("auto-topic", partition: 2, makeBatch(count: 1).bytes)
            #expect(p.errorCode == 0 && p.baseOffset == 0)
            await c.close()
        }
    }

    @Test func autoCreateOnlyWhenAllowed() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            // v4+: the request's flag decides.
            let denied = try await metadata(c, ["no-auto"], version: 9, allowAuto: false)
            #expect(denied.topics.first?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let all = try await metadata(c, nil, version: 9)
            #expect(!all.topics.contains { $0.name == "no-auto" })
            // v1-3 always allow it.
            let v3 = try await metadata(c, ["v3-auto"], version: 3)
            #expect(v3.topics.first?.errorCode == 0)
            #expect(v3.topics.first?.partitions.count == 1)
            await c.close()
        }
        // Broker setting off: never created, even before v4.
        try await withBroker({ $0.autoCreateTopics = false }) { b in
            let c = try await b.connect()
            let r = try await metadata(c, ["x"], version: 1)
            #expect(r.topics.first?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let r12 = try await metadata(c, ["x"], version: 12, allowAuto: true)
            #expect(r12.topics.first?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            await c.close()
        }
    }

    @Test func invalidTopicNames() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let bad = ["has space", "..", ".", String(repeating: "a", count: 250), "slash/name", "ümlaut"]
            let r = try await metadata(c, bad, version: 12)
            #expect(r.topics.count == bad.count)
            for t in r.topics {
                #expect(t.errorCode == KafkaErrorCode.invalidTopicException.rawValue, "\(t.name ?? "nil")")
            }
            let all = try await metadata(c, nil, version: 12)
            #expect(all.topics.isEmpty)
            // The longest valid name works.
            let ok = try await metadata(c, [String(repeating: "a", count: 249)], version: 12)
            #expect(ok.topics.first?.errorCode == 0)
            await c.close()
        }
    }

    @Test func nullAndEmptyTopicListSemantics() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            try await c.createTopic("t1")
            try await c.createTopic("t2", partitions: 2)
            // v0: an empty list means all topics.
            let v0 = try await metadata(c, [], version: 0)
            #expect(v0.topics.compactMap(\.name).sorted() == ["t1", "t2"])
            // v1+: empty = none, null = all.
            let v1Empty = try await metadata(c, [], version: 1)
            #expect(v1Empty.topics.isEmpty)
            let v1Null = try await metadata(c, nil, version: 1)
            #expect(v1Null.topics.compactMap(\.name).sorted() == ["t1", "t2"])
            let v12Null = try await metadata(c, nil, version: 12)
            #expect(v12Null.topics.first { $0.name == "t2" }?.partitions.count == 2)
            #expect(v12Null.topics.allSatisfy { $0.topicId != .zero })
            await c.close()
        }
    }
}
