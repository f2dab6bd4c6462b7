import WoodpeckerCore

/// Kafka API keys (the `request_api_key` of every request header), as defined by Apache Kafka's message JSON.
public enum ApiKey: Int16, Sendable, CaseIterable, CustomStringConvertible {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case leaderAndIsr = 4
    case stopReplica = 5
    case updateMetadata = 6
    case controlledShutdown = 7
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
    case describeGroups = 15
    case listGroups = 16
    case saslHandshake = 17
    case apiVersions = 18
    case createTopics = 19
    case deleteTopics = 20
    case deleteRecords = 21
    case initProducerId = 22
    case offsetForLeaderEpoch = 23
    case addPartitionsToTxn = 24
    case addOffsetsToTxn = 25
    case endTxn = 26
    case writeTxnMarkers = 27
    case txnOffsetCommit = 28
    case describeAcls = 29
    case createAcls = 30
    case deleteAcls = 31
    case describeConfigs = 32
    case alterConfigs = 33
    case alterReplicaLogDirs = 34
    case describeLogDirs = 35
    case saslAuthenticate = 36
    case createPartitions = 37
    case createDelegationToken = 38
    case renewDelegationToken = 39
    case expireDelegationToken = 40
    case describeDelegationToken = 41
    case deleteGroups = 42
    case electLeaders = 43
    case incrementalAlterConfigs = 44
    case alterPartitionReassignments = 45
    case listPartitionReassignments = 46
    case offsetDelete = 47
    case describeClientQuotas = 48
    case alterClientQuotas = 49
    case describeUserScramCredentials = 50
    case alterUserScramCredentials = 51
    case vote = 52
    case beginQuorumEpoch = 53
    case endQuorumEpoch = 54
    case describeQuorum = 55
    case alterPartition = 56
    case updateFeatures = 57
    case envelope = 58
    case fetchSnapshot = 59
    case describeCluster = 60
    case describeProducers = 61
    case brokerRegistration = 62
    case brokerHeartbeat = 63
    case unregisterBroker = 64
    case describeTransactions = 65
    case listTransactions = 66
    case allocateProducerIds = 67
    case consumerGroupHeartbeat = 68
    case consumerGroupDescribe = 69
    case controllerRegistration = 70
    case getTelemetrySubscriptions = 71
    case pushTelemetry = 72
    case assignReplicasToDirs = 73
    case listClientMetricsResources = 74
    case describeTopicPartitions = 75
    case shareGroupHeartbeat = 76
    case shareGroupDescribe = 77
    case shareFetch = 78
    case shareAcknowledge = 79
    case addRaftVoter = 80
    case removeRaftVoter = 81
    case updateRaftVoter = 82
    case initializeShareGroupState = 83
    case readShareGroupState = 84
    case writeShareGroupState = 85
    case deleteShareGroupState = 86
    case readShareGroupStateSummary = 87

    public var description: String { "\(self)(\(rawValue))" }

    /// The generated request and response codecs, or nil for APIs this module has no codec for.
    public var codec: (request: any KafkaMessage.Type, response: any KafkaMessage.Type)? {
        switch self {
        case .apiVersions: (ApiVersionsRequest.self, ApiVersionsResponse.self)
        case .metadata: (MetadataRequest.self, MetadataResponse.self)
        case .produce: (ProduceRequest.self, ProduceResponse.self)
        case .fetch: (FetchRequest.self, FetchResponse.self)
        case .listOffsets: (ListOffsetsRequest.self, ListOffsetsResponse.self)
        case .initProducerId: (InitProducerIdRequest.self, InitProducerIdResponse.self)
        case .createTopics: (CreateTopicsRequest.self, CreateTopicsResponse.self)
        case .deleteTopics: (DeleteTopicsRequest.self, DeleteTopicsResponse.self)
        case .createPartitions: (CreatePartitionsRequest.self, CreatePartitionsResponse.self)
        case .describeConfigs: (DescribeConfigsRequest.self, DescribeConfigsResponse.self)
        case .describeCluster: (DescribeClusterRequest.self, DescribeClusterResponse.self)
        case .findCoordinator: (FindCoordinatorRequest.self, FindCoordinatorResponse.self)
        case .joinGroup: (JoinGroupRequest.self, JoinGroupResponse.self)
        case .syncGroup: (SyncGroupRequest.self, SyncGroupResponse.self)
        case .heartbeat: (HeartbeatRequest.self, HeartbeatResponse.self)
        case .leaveGroup: (LeaveGroupRequest.self, LeaveGroupResponse.self)
        case .offsetCommit: (OffsetCommitRequest.self, OffsetCommitResponse.self)
        case .offsetFetch: (OffsetFetchRequest.self, OffsetFetchResponse.self)
        case .listGroups: (ListGroupsRequest.self, ListGroupsResponse.self)
        case .describeGroups: (DescribeGroupsRequest.self, DescribeGroupsResponse.self)
        case .deleteGroups: (DeleteGroupsRequest.self, DeleteGroupsResponse.self)
        case .offsetDelete: (OffsetDeleteRequest.self, OffsetDeleteResponse.self)
        default: nil
        }
    }

    /// Request versions Kafka defines for this API (from the upstream JSON).
    public var upstreamVersions: ClosedRange<Int16>? { UpstreamApis.lookup(rawValue)?.valid }

    /// True when requests and responses of `version` use the flexible (KIP-482) encoding.
    /// Versions above the upstream maximum count as flexible when the API has flexible versions at all
    /// (flexibility never goes away once introduced).
    public func isFlexible(version: Int16) -> Bool {
        guard let from = UpstreamApis.lookup(rawValue)?.flexibleFrom else { return false }
        return version >= from
    }
}
