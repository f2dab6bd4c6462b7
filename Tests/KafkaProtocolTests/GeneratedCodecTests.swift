import KafkaProtocol
import Testing
import WoodpeckerCore

@Suite struct GeneratedCodecTests {
    /// Every message at every valid version: defaults survive encode → decode → encode byte for byte, every byte
    /// is consumed, and every strict prefix of the encoding fails to decode.
    @Test func defaultsRoundTripAtEveryVersion() throws {
        var checked = 0
        for type in allCodecTypes {
            checked += try checkDefaults(type)
        }
        // 44 messages + 2 headers, summed over their version ranges.
        #expect(checked > 300)
    }

    private func checkDefaults<T: KafkaCodable>(_ type: T.Type) throws -> Int {
        var n = 0
        for v in T.validVersions {
            let r = try roundTrip(T.defaultValue, version: v)
            #expect(r.decoded == T.defaultValue, "\(T.self) v\(v) decoded differs")
            #expect(r.consumedAll, "\(T.self) v\(v) left bytes")
            #expect(r.reencodedSame, "\(T.self) v\(v) re-encoding differs")
            #expect(prefixesThatDecode(T.self, r.bytes, version: v).isEmpty, "\(T.self) v\(v) accepted a truncated body")
            n += 1
        }
        return n
    }

    /// Populated messages at every version: re-encoding after decode is byte-identical, the decoded value keeps
    /// the fields that exist in that version, truncations throw.
    @Test func populatedMessagesRoundTrip() throws {
        try checkPopulated(Samples.produceRequest) { d, v in
            #expect(d.topicData.first?.partitionData.first?.records == Samples.records)
            #expect(d.acks == -1)
            #expect(d.transactionalId == (v >= 3 ? "tx" : nil))
        }
        try checkPopulated(Samples.fetchResponse) { d, v in
            let p = d.responses.first?.partitions.first
            #expect(p?.records == Samples.records)
            #expect(p?.highWatermark == 42)
            #expect(p?.lastStableOffset == (v >= 4 ? 42 : -1))
            #expect(p?.abortedTransactions == [])  // absent before v4: the JSON default (empty)
            #expect(p?.currentLeader.leaderEpoch == (v >= 12 ? 5 : -1))
            #expect(d.responses.first?.topicId == (v >= 13 ? Samples.topicId : .zero))
        }
        try checkPopulated(Samples.metadataResponse) { d, v in
            #expect(d.brokers.first?.host == "localhost")
            #expect(d.brokers.first?.rack == (v >= 1 ? "r1" : nil))
            #expect(d.topics.first?.partitions.first?.replicaNodes == [1])
        }
        try checkPopulated(Samples.apiVersionsResponse) { d, v in
            #expect(d.apiKeys.count == 2)
            #expect(d.finalizedFeaturesEpoch == (v >= 3 ? 7 : -1))
            #expect(d.supportedFeatures.first?.name == (v >= 3 ? "metadata.version" : nil))
        }
        try checkPopulated(Samples.joinGroupRequest) { d, v in
            #expect(d.protocols.first?.metadata == [1, 2, 3])
            #expect(d.groupInstanceId == (v >= 5 ? "static-1" : nil))
            #expect(d.rebalanceTimeoutMs == (v >= 1 ? 30000 : -1))
        }
        try checkPopulated(Samples.offsetFetchRequest) { d, v in
            if v >= 8 {
                #expect(d.groups.first?.groupId == "g")
            } else {
                #expect(d.groupId == "g")
                #expect(d.topics?.first?.partitionIndexes == [0, 1])
            }
        }
    }

    private func checkPopulated<T: KafkaCodable>(_ value: T, _ verify: (T, Int16) -> Void) throws {
        for v in T.validVersions {
            let r = try roundTrip(value, version: v)
            #expect(r.consumedAll, "\(T.self) v\(v) left bytes")
            #expect(r.reencodedSame, "\(T.self) v\(v) re-encoding differs")
            #expect(prefixesThatDecode(T.self, r.bytes, version: v).isEmpty, "\(T.self) v\(v) accepted a truncated body")
            verify(r.decoded, v)
        }
    }

    /// Tagged fields: omitted at their default, written when set, and unknown tags are skipped on decode.
    @Test func taggedFields() throws {
        let plain = ApiVersionsResponse(errorCode: 0, apiKeys: []).encoded(version: 3).readableBytesArray
        // error 0000, empty compact array 01, throttle 00000000, no tags 00.
        #expect(plain == hexBytes("0000 01 00000000 00"))

        let tagged = ApiVersionsResponse(finalizedFeaturesEpoch: 7).encoded(version: 3).readableBytesArray
        // One tag: tag 1, size 8, int64 7.
        #expect(tagged == hexBytes("0000 01 00000000 01 01 08 0000000000000007"))

        // Unknown tag 9 (3 bytes) before the known tag 1: skipped.
        var withUnknown = ByteBuffer(bytes: hexBytes("0000 01 00000000 02 09 03 aabbcc 01 08 0000000000000007"))
        let d = try ApiVersionsResponse(from: &withUnknown, version: 3)
        #expect(d.finalizedFeaturesEpoch == 7)
        #expect(withUnknown.readableBytes == 0)
    }

    @Test func headerVersions() throws {
        #expect(KafkaHeaders.requestHeaderVersion(apiKey: 18, version: 3) == 2)
        #expect(KafkaHeaders.requestHeaderVersion(apiKey: 18, version: 2) == 1)
        #expect(KafkaHeaders.requestHeaderVersion(apiKey: 0, version: 9) == 2)
        #expect(KafkaHeaders.requestHeaderVersion(apiKey: 0, version: 8) == 1)
        // ApiVersions responses always use header v0, even for flexible versions.
        #expect(KafkaHeaders.responseHeaderVersion(apiKey: 18, version: 4) == 0)
        #expect(KafkaHeaders.responseHeaderVersion(apiKey: 1, version: 12) == 1)
        #expect(KafkaHeaders.responseHeaderVersion(apiKey: 1, version: 11) == 0)
        // Unknown ApiVersions version above our maximum: still flexible (header v2).
        #expect(KafkaHeaders.requestHeaderVersion(apiKey: 18, version: 9) == 2)
        // APIs without a codec still know their flexibility (SaslHandshake never, IncrementalAlterConfigs from 1).
        #expect(KafkaHeaders.isFlexible(apiKey: 17, version: 1) == false)
        #expect(KafkaHeaders.isFlexible(apiKey: 44, version: 1) == true)
        #expect(KafkaHeaders.isFlexible(apiKey: 999, version: 0) == nil)
        #expect(ApiKey.fetch.isFlexible(version: 12))
        #expect(!ApiKey.fetch.isFlexible(version: 11))
    }

    @Test func generatedMetadata() {
        #expect(ProduceRequest.apiKey == 0)
        #expect(ProduceRequest.validVersions == 0...11)
        #expect(ProduceRequest.flexibleVersions?.lowerBound == 9)
        #expect(OffsetDeleteRequest.flexibleVersions?.lowerBound == nil)
        #expect(DescribeClusterRequest.isFlexible(0))
        for key in ApiKey.allCases {
            guard let codec = key.codec else { continue }
            #expect(codec.request.apiKey == key.rawValue)
            #expect(codec.response.apiKey == key.rawValue)
            #expect(key.upstreamVersions == codec.request.validVersions)
        }
        #expect(ApiKey.allCases.compactMap(\.codec).count == 24)
        #expect(AlterConfigsRequest.flexibleVersions?.lowerBound == 2 && IncrementalAlterConfigsRequest.flexibleVersions?.lowerBound == 1)
        #expect(KafkaErrorCode.unknownTopicOrPartition.rawValue == 3)
        #expect(KafkaErrorCode.memberIdRequired.rawValue == 79)
        #expect(KafkaErrorCode.invalidRecord.name == "INVALID_RECORD")
        #expect(KafkaErrorCode.notCoordinator.isRetriable)
        #expect(!KafkaErrorCode.invalidRecord.isRetriable)
    }
}

/// Populated sample messages.
enum Samples {
    static let topicId = KafkaUUID(high: 0x0102_0304_0506_0708, low: 0x090A_0B0C_0D0E_0F10)
    static let records = ByteBuffer(bytes: Array(0..<100).map { UInt8($0) })

    static let produceRequest = ProduceRequest(
        transactionalId: "tx", acks: -1, timeoutMs: 1500,
        topicData: [.init(name: "events", partitionData: [.init(index: 3, records: records), .init(index: 4, records: nil)])])

    static let fetchResponse = FetchResponse(
        throttleTimeMs: 1, errorCode: 0, sessionId: 0,
        responses: [.init(topic: "events", topicId: topicId, partitions: [
            .init(partitionIndex: 0, errorCode: 0, highWatermark: 42, lastStableOffset: 42, logStartOffset: 0,
                  currentLeader: .init(leaderId: 1, leaderEpoch: 5), abortedTransactions: [], preferredReadReplica: -1,
                  records: records),
        ])])

    static let metadataResponse = MetadataResponse(
        throttleTimeMs: 0,
        brokers: [.init(nodeId: 1, host: "localhost", port: 9092, rack: "r1")],
        clusterId: "cluster", controllerId: 1,
        topics: [.init(errorCode: 0, name: "events", topicId: topicId, isInternal: false, partitions: [
            .init(errorCode: 0, partitionIndex: 0, leaderId: 1, leaderEpoch: 0, replicaNodes: [1], isrNodes: [1],
                  offlineReplicas: []),
        ])])

    static let apiVersionsResponse = ApiVersionsResponse(
        errorCode: 0, apiKeys: [.init(apiKey: 0, minVersion: 0, maxVersion: 11), .init(apiKey: 18, minVersion: 0, maxVersion: 4)],
        throttleTimeMs: 0, supportedFeatures: [.init(name: "metadata.version", minVersion: 1, maxVersion: 20)],
        finalizedFeaturesEpoch: 7)

    static let joinGroupRequest = JoinGroupRequest(
        groupId: "g", sessionTimeoutMs: 10000, rebalanceTimeoutMs: 30000, memberId: "", groupInstanceId: "static-1",
        protocolType: "consumer", protocols: [.init(name: "range", metadata: [1, 2, 3])], reason: "join")

    static let offsetFetchRequest = OffsetFetchRequest(
        groupId: "g", topics: [.init(name: "events", partitionIndexes: [0, 1])], groups: [
            .init(groupId: "g", memberId: nil, memberEpoch: -1, topics: [.init(name: "events", partitionIndexes: [0, 1])]),
        ], requireStable: false)
}
