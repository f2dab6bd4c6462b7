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

    /// e.g. `apiVersions(18)`. (Interpolating `self` here would call this property again, forever.)
    public var description: String { "\(Self.names[rawValue] ?? "api")(\(rawValue))" }

    static let names: [Int16: String] = [0: "produce", 1: "fetch", 2: "listOffsets", 3: "metadata", 4: "leaderAndIsr", 5: "stopReplica", 6: "updateMetadata", 7: "controlledShutdown", 8: "offsetCommit", 9: "offsetFetch", 10: "findCoordinator", 11: "joinGroup", 12: "heartbeat", 13: "leaveGroup", 14: "syncGroup", 15: "describeGroups", 16: "listGroups", 17: "saslHandshake", 18: "apiVersions", 19: "createTopics", 20: "deleteTopics", 21: "deleteRecords", 22: "initProducerId", 23: "offsetForLeaderEpoch", 24: "addPartitionsToTxn", 25: "addOffsetsToTxn", 26: "endTxn", 27: "writeTxnMarkers", 28: "txnOffsetCommit", 29: "describeAcls", 30: "createAcls", 31: "deleteAcls", 32: "describeConfigs", 33: "alterConfigs", 34: "alterReplicaLogDirs", 35: "describeLogDirs", 36: "saslAuthenticate", 37: "createPartitions", 38: "createDelegationToken", 39: "renewDelegationToken", 40: "expireDelegationToken", 41: "describeDelegationToken", 42: "deleteGroups", 43: "electLeaders", 44: "incrementalAlterConfigs", 45: "alterPartitionReassignments", 46: "listPartitionReassignments", 47: "offsetDelete", 48: "describeClientQuotas", 49: "alterClientQuotas", 50: "describeUserScramCredentials", 51: "alterUserScramCredentials", 52: "vote", 53: "beginQuorumEpoch", 54: "endQuorumEpoch", 55: "describeQuorum", 56: "alterPartition", 57: "updateFeatures", 58: "envelope", 59: "fetchSnapshot", 60: "describeCluster", 61: "describeProducers", 62: "brokerRegistration", 63: "brokerHeartbeat", 64: "unregisterBroker", 65: "describeTransactions", 66: "listTransactions", 67: "allocateProducerIds", 68: "consumerGroupHeartbeat", 69: "consumerGroupDescribe", 70: "controllerRegistration", 71: "getTelemetrySubscriptions", 72: "pushTelemetry", 73: "assignReplicasToDirs", 74: "listClientMetricsResources", 75: "describeTopicPartitions", 76: "shareGroupHeartbeat", 77: "shareGroupDescribe", 78: "shareFetch", 79: "shareAcknowledge", 80: "addRaftVoter", 81: "removeRaftVoter", 82: "updateRaftVoter", 83: "initializeShareGroupState", 84: "readShareGroupState", 85: "writeShareGroupState", 86: "deleteShareGroupState", 87: "readShareGroupStateSummary"] 

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
        case .alterConfigs: (AlterConfigsRequest.self, AlterConfigsResponse.self)
        case .incrementalAlterConfigs: (IncrementalAlterConfigsRequest.self, IncrementalAlterConfigsResponse.self)
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
