import KafkaProtocol
import WoodpeckerCore

extension Broker {
    /// ApiVersions: response header v0 always; an unsupported version gets error 35 with a v0 body listing only
    /// our ApiVersions range (KIP-511). The v3+ body carries no tagged fields (Debian's librdkafka 2.0.2 needs that).
    func apiVersions(_ r: KafkaRequest) -> KafkaResponseOutcome {
        let range = Self.supportedVersions[.apiVersions]!
        guard range.contains(r.version) else {
            var resp = ApiVersionsResponse()
            resp.errorCode = KafkaErrorCode.unsupportedVersion.rawValue
            resp.apiKeys = [.init(apiKey: ApiKey.apiVersions.rawValue, minVersion: range.lowerBound, maxVersion: range.upperBound)]
            return .respond(KafkaHeaders.responseFrame(resp, correlationId: r.correlationId, version: 0))
        }
        var resp = ApiVersionsResponse()
        resp.apiKeys = Self.supportedVersions.sorted { $0.key.rawValue < $1.key.rawValue }.map {
            .init(apiKey: $0.key.rawValue, minVersion: $0.value.lowerBound, maxVersion: $0.value.upperBound)
        }
        return respond(resp, r)
    }

    private var selfBroker: MetadataResponse.MetadataResponseBroker {
        .init(nodeId: config.nodeId, host: config.advertisedHost, port: Int32(config.advertisedPort), rack: nil)
    }

    /// Metadata: this broker leads every partition. Unknown topics are auto-created when the request allows it
    /// (always before v4) and the broker is configured to.
    func metadataRequest(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(MetadataRequest.self, r)
        var resp = MetadataResponse()
        resp.brokers = [selfBroker]
        resp.clusterId = config.clusterId
        resp.controllerId = config.nodeId
        let allowCreate = r.version < 4 || req.allowAutoTopicCreation
        // v0: empty list = all topics; v1+: null = all topics.
        let wantAll = req.topics == nil || (r.version == 0 && req.topics!.isEmpty)
        if wantAll {
            for t in await topics.allTopics() { resp.topics.append(topicMetadata(t)) }
        } else {
            for rt in req.topics ?? [] {
                guard let name = rt.name else {
                    resp.topics.append(.init(errorCode: KafkaErrorCode.unknownTopicId.rawValue, name: nil, topicId: rt.topicId))
                    continue
                }
                guard TopicManager.validTopicName(name) else {
                    resp.topics.append(.init(errorCode: KafkaErrorCode.invalidTopicException.rawValue, name: name))
                    continue
                }
                if let t = try await topics.topicOrAutoCreate(name, allowed: allowCreate) {
                    resp.topics.append(topicMetadata(t))
                } else {
                    resp.topics.append(.init(errorCode: KafkaErrorCode.unknownTopicOrPartition.rawValue, name: name))
                }
            }
        }
        return respond(resp, r)
    }

    private func topicMetadata(_ t: TopicRecord) -> MetadataResponse.MetadataResponseTopic {
        var m = MetadataResponse.MetadataResponseTopic(errorCode: 0, name: t.name, topicId: t.topicId, isInternal: false)
        m.partitions = (0..<t.partitions).map {
            .init(errorCode: 0, partitionIndex: $0, leaderId: config.nodeId, leaderEpoch: 0,
                  replicaNodes: [config.nodeId], isrNodes: [config.nodeId], offlineReplicas: [])
        }
        return m
    }

    /// FindCoordinator: this broker for every key (it is the group coordinator of every group).
    func findCoordinator(_ r: KafkaRequest) throws -> KafkaResponseOutcome {
        let req = try decode(FindCoordinatorRequest.self, r)
        var resp = FindCoordinatorResponse()
        if r.version >= 4 {
            resp.coordinators = req.coordinatorKeys.map {
                .init(key: $0, nodeId: config.nodeId, host: config.advertisedHost, port: Int32(config.advertisedPort),
                      errorCode: 0, errorMessage: nil)
            }
        } else {
            resp.nodeId = config.nodeId
            resp.host = config.advertisedHost
            resp.port = Int32(config.advertisedPort)
            resp.errorMessage = nil
        }
        return respond(resp, r)
    }

    func describeCluster(_ r: KafkaRequest) throws -> KafkaResponseOutcome {
        _ = try decode(DescribeClusterRequest.self, r)
        var resp = DescribeClusterResponse()
        resp.clusterId = config.clusterId
        resp.controllerId = config.nodeId
        resp.brokers = [.init(brokerId: config.nodeId, host: config.advertisedHost, port: Int32(config.advertisedPort), rack: nil)]
        return respond(resp, r)
    }

    /// InitProducerId for idempotent (non-transactional) producers: a fresh, never reused id with epoch 0.
    func initProducerId(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(InitProducerIdRequest.self, r)
        var resp = InitProducerIdResponse()
        if req.transactionalId != nil {
            resp.errorCode = KafkaErrorCode.transactionalIdAuthorizationFailed.rawValue
            resp.producerId = -1
            resp.producerEpoch = -1
            return respond(resp, r)
        }
        do {
            resp.producerId = try await producerIds.allocate()
            resp.producerEpoch = 0
        } catch {
            Diagnostics.warn("InitProducerId: \(error)")
            resp.errorCode = KafkaErrorCode.coordinatorNotAvailable.rawValue
            resp.producerId = -1
            resp.producerEpoch = -1
        }
        return respond(resp, r)
    }

    /// ListOffsets v0-7: -1 latest (high watermark), -2 earliest, -3 max timestamp, else the first offset whose
    /// timestamp is >= the given one (-1/-1 when none).
    func listOffsets(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(ListOffsetsRequest.self, r)
        var resp = ListOffsetsResponse()
        for t in req.topics {
            var tr = ListOffsetsResponse.ListOffsetsTopicResponse(name: t.name, partitions: [])
            for p in t.partitions {
                var pr = ListOffsetsResponse.ListOffsetsPartitionResponse(partitionIndex: p.partitionIndex)
                pr.timestamp = -1
                pr.offset = -1
                let log: PartitionLog
                switch await topics.partitionOrError(t.name, p.partitionIndex) {
                case let .success(l): log = l
                case let .failure(code):
                    pr.errorCode = code.rawValue
                    tr.partitions.append(pr)
                    continue
                }
                do {
                    let (offset, ts) = try await log.offset(forTimestamp: p.timestamp)
                    pr.offset = offset
                    pr.timestamp = ts
                    pr.leaderEpoch = 0
                    if r.version == 0 { pr.oldStyleOffsets = offset >= 0 ? [offset] : [] }
                } catch {
                    pr.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                }
                tr.partitions.append(pr)
            }
            resp.topics.append(tr)
        }
        return respond(resp, r)
    }
}
