/// Kafka protocol error codes (the `error_code` fields of responses), as listed in the Kafka protocol guide.
public enum KafkaErrorCode: Int16, Sendable, CaseIterable, CustomStringConvertible, Error {
    case unknownServerError = -1
    case none = 0
    case offsetOutOfRange = 1
    case corruptMessage = 2
    case unknownTopicOrPartition = 3
    case invalidFetchSize = 4
    case leaderNotAvailable = 5
    case notLeaderOrFollower = 6
    case requestTimedOut = 7
    case brokerNotAvailable = 8
    case replicaNotAvailable = 9
    case messageTooLarge = 10
    case staleControllerEpoch = 11
    case offsetMetadataTooLarge = 12
    case networkException = 13
    case coordinatorLoadInProgress = 14
    case coordinatorNotAvailable = 15
    case notCoordinator = 16
    case invalidTopicException = 17
    case recordListTooLarge = 18
    case notEnoughReplicas = 19
    case notEnoughReplicasAfterAppend = 20
    case invalidRequiredAcks = 21
    case illegalGeneration = 22
    case inconsistentGroupProtocol = 23
    case invalidGroupId = 24
    case unknownMemberId = 25
    case invalidSessionTimeout = 26
    case rebalanceInProgress = 27
    case invalidCommitOffsetSize = 28
    case topicAuthorizationFailed = 29
    case groupAuthorizationFailed = 30
    case clusterAuthorizationFailed = 31
    case invalidTimestamp = 32
    case unsupportedSaslMechanism = 33
    case illegalSaslState = 34
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidReplicationFactor = 38
    case invalidReplicaAssignment = 39
    case invalidConfig = 40
    case notController = 41
    case invalidRequest = 42
    case unsupportedForMessageFormat = 43
    case policyViolation = 44
    case outOfOrderSequenceNumber = 45
    case duplicateSequenceNumber = 46
    case invalidProducerEpoch = 47
    case invalidTxnState = 48
    case invalidProducerIdMapping = 49
    case invalidTransactionTimeout = 50
    case concurrentTransactions = 51
    case transactionCoordinatorFenced = 52
    case transactionalIdAuthorizationFailed = 53
    case securityDisabled = 54
    case operationNotAttempted = 55
    case kafkaStorageError = 56
    case logDirNotFound = 57
    case saslAuthenticationFailed = 58
    case unknownProducerId = 59
    case reassignmentInProgress = 60
    case delegationTokenAuthDisabled = 61
    case delegationTokenNotFound = 62
    case delegationTokenOwnerMismatch = 63
    case delegationTokenRequestNotAllowed = 64
    case delegationTokenAuthorizationFailed = 65
    case delegationTokenExpired = 66
    case invalidPrincipalType = 67
    case nonEmptyGroup = 68
    case groupIdNotFound = 69
    case fetchSessionIdNotFound = 70
    case invalidFetchSessionEpoch = 71
    case listenerNotFound = 72
    case topicDeletionDisabled = 73
    case fencedLeaderEpoch = 74
    case unknownLeaderEpoch = 75
    case unsupportedCompressionType = 76
    case staleBrokerEpoch = 77
    case offsetNotAvailable = 78
    case memberIdRequired = 79
    case preferredLeaderNotAvailable = 80
    case groupMaxSizeReached = 81
    case fencedInstanceId = 82
    case eligibleLeadersNotAvailable = 83
    case electionNotNeeded = 84
    case noReassignmentInProgress = 85
    case groupSubscribedToTopic = 86
    case invalidRecord = 87
    case unstableOffsetCommit = 88
    case throttlingQuotaExceeded = 89
    case producerFenced = 90
    case resourceNotFound = 91
    case duplicateResource = 92
    case unacceptableCredential = 93
    case inconsistentVoterSet = 94
    case invalidUpdateVersion = 95
    case featureUpdateFailed = 96
    case principalDeserializationFailure = 97
    case snapshotNotFound = 98
    case positionOutOfRange = 99
    case unknownTopicId = 100
    case duplicateBrokerRegistration = 101
    case brokerIdNotRegistered = 102
    case inconsistentTopicId = 103
    case inconsistentClusterId = 104
    case transactionalIdNotFound = 105
    case fetchSessionTopicIdError = 106
    case ineligibleReplica = 107
    case newLeaderElected = 108
    case offsetMovedToTieredStorage = 109
    case fencedMemberEpoch = 110
    case unreleasedInstanceId = 111
    case unsupportedAssignor = 112
    case staleMemberEpoch = 113
    case mismatchedEndpointType = 114
    case unsupportedEndpointType = 115
    case unknownControllerId = 116
    case unknownSubscriptionId = 117
    case telemetryTooLarge = 118
    case invalidRegistration = 119
    case transactionAbortable = 120

    /// The upstream constant name, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
    public var name: String {
        switch self {
        case .unknownServerError: "UNKNOWN_SERVER_ERROR"
        case .none: "NONE"
        case .offsetOutOfRange: "OFFSET_OUT_OF_RANGE"
        case .corruptMessage: "CORRUPT_MESSAGE"
        case .unknownTopicOrPartition: "UNKNOWN_TOPIC_OR_PARTITION"
        case .invalidFetchSize: "INVALID_FETCH_SIZE"
        case .leaderNotAvailable: "LEADER_NOT_AVAILABLE"
        case .notLeaderOrFollower: "NOT_LEADER_OR_FOLLOWER"
        case .requestTimedOut: "REQUEST_TIMED_OUT"
        case .brokerNotAvailable: "BROKER_NOT_AVAILABLE"
        case .replicaNotAvailable: "REPLICA_NOT_AVAILABLE"
        case .messageTooLarge: "MESSAGE_TOO_LARGE"
        case .staleControllerEpoch: "STALE_CONTROLLER_EPOCH"
        case .offsetMetadataTooLarge: "OFFSET_METADATA_TOO_LARGE"
        case .networkException: "NETWORK_EXCEPTION"
        case .coordinatorLoadInProgress: "COORDINATOR_LOAD_IN_PROGRESS"
        case .coordinatorNotAvailable: "COORDINATOR_NOT_AVAILABLE"
        case .notCoordinator: "NOT_COORDINATOR"
        case .invalidTopicException: "INVALID_TOPIC_EXCEPTION"
        case .recordListTooLarge: "RECORD_LIST_TOO_LARGE"
        case .notEnoughReplicas: "NOT_ENOUGH_REPLICAS"
        case .notEnoughReplicasAfterAppend: "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
        case .invalidRequiredAcks: "INVALID_REQUIRED_ACKS"
        case .illegalGeneration: "ILLEGAL_GENERATION"
        case .inconsistentGroupProtocol: "INCONSISTENT_GROUP_PROTOCOL"
        case .invalidGroupId: "INVALID_GROUP_ID"
        case .unknownMemberId: "UNKNOWN_MEMBER_ID"
        case .invalidSessionTimeout: "INVALID_SESSION_TIMEOUT"
        case .rebalanceInProgress: "REBALANCE_IN_PROGRESS"
        case .invalidCommitOffsetSize: "INVALID_COMMIT_OFFSET_SIZE"
        case .topicAuthorizationFailed: "TOPIC_AUTHORIZATION_FAILED"
        case .groupAuthorizationFailed: "GROUP_AUTHORIZATION_FAILED"
        case .clusterAuthorizationFailed: "CLUSTER_AUTHORIZATION_FAILED"
        case .invalidTimestamp: "INVALID_TIMESTAMP"
        case .unsupportedSaslMechanism: "UNSUPPORTED_SASL_MECHANISM"
        case .illegalSaslState: "ILLEGAL_SASL_STATE"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .topicAlreadyExists: "TOPIC_ALREADY_EXISTS"
        case .invalidPartitions: "INVALID_PARTITIONS"
        case .invalidReplicationFactor: "INVALID_REPLICATION_FACTOR"
        case .invalidReplicaAssignment: "INVALID_REPLICA_ASSIGNMENT"
        case .invalidConfig: "INVALID_CONFIG"
        case .notController: "NOT_CONTROLLER"
        case .invalidRequest: "INVALID_REQUEST"
        case .unsupportedForMessageFormat: "UNSUPPORTED_FOR_MESSAGE_FORMAT"
        case .policyViolation: "POLICY_VIOLATION"
        case .outOfOrderSequenceNumber: "OUT_OF_ORDER_SEQUENCE_NUMBER"
        case .duplicateSequenceNumber: "DUPLICATE_SEQUENCE_NUMBER"
        case .invalidProducerEpoch: "INVALID_PRODUCER_EPOCH"
        case .invalidTxnState: "INVALID_TXN_STATE"
        case .invalidProducerIdMapping: "INVALID_PRODUCER_ID_MAPPING"
        case .invalidTransactionTimeout: "INVALID_TRANSACTION_TIMEOUT"
        case .concurrentTransactions: "CONCURRENT_TRANSACTIONS"
        case .transactionCoordinatorFenced: "TRANSACTION_COORDINATOR_FENCED"
        case .transactionalIdAuthorizationFailed: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
        case .securityDisabled: "SECURITY_DISABLED"
        case .operationNotAttempted: "OPERATION_NOT_ATTEMPTED"
        case .kafkaStorageError: "KAFKA_STORAGE_ERROR"
        case .logDirNotFound: "LOG_DIR_NOT_FOUND"
        case .saslAuthenticationFailed: "SASL_AUTHENTICATION_FAILED"
        case .unknownProducerId: "UNKNOWN_PRODUCER_ID"
        case .reassignmentInProgress: "REASSIGNMENT_IN_PROGRESS"
        case .delegationTokenAuthDisabled: "DELEGATION_TOKEN_AUTH_DISABLED"
        case .delegationTokenNotFound: "DELEGATION_TOKEN_NOT_FOUND"
        case .delegationTokenOwnerMismatch: "DELEGATION_TOKEN_OWNER_MISMATCH"
        case .delegationTokenRequestNotAllowed: "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED"
        case .delegationTokenAuthorizationFailed: "DELEGATION_TOKEN_AUTHORIZATION_FAILED"
        case .delegationTokenExpired: "DELEGATION_TOKEN_EXPIRED"
        case .invalidPrincipalType: "INVALID_PRINCIPAL_TYPE"
        case .nonEmptyGroup: "NON_EMPTY_GROUP"
        case .groupIdNotFound: "GROUP_ID_NOT_FOUND"
        case .fetchSessionIdNotFound: "FETCH_SESSION_ID_NOT_FOUND"
        case .invalidFetchSessionEpoch: "INVALID_FETCH_SESSION_EPOCH"
        case .listenerNotFound: "LISTENER_NOT_FOUND"
        case .topicDeletionDisabled: "TOPIC_DELETION_DISABLED"
        case .fencedLeaderEpoch: "FENCED_LEADER_EPOCH"
        case .unknownLeaderEpoch: "UNKNOWN_LEADER_EPOCH"
        case .unsupportedCompressionType: "UNSUPPORTED_COMPRESSION_TYPE"
        case .staleBrokerEpoch: "STALE_BROKER_EPOCH"
        case .offsetNotAvailable: "OFFSET_NOT_AVAILABLE"
        case .memberIdRequired: "MEMBER_ID_REQUIRED"
        case .preferredLeaderNotAvailable: "PREFERRED_LEADER_NOT_AVAILABLE"
        case .groupMaxSizeReached: "GROUP_MAX_SIZE_REACHED"
        case .fencedInstanceId: "FENCED_INSTANCE_ID"
        case .eligibleLeadersNotAvailable: "ELIGIBLE_LEADERS_NOT_AVAILABLE"
        case .electionNotNeeded: "ELECTION_NOT_NEEDED"
        case .noReassignmentInProgress: "NO_REASSIGNMENT_IN_PROGRESS"
        case .groupSubscribedToTopic: "GROUP_SUBSCRIBED_TO_TOPIC"
        case .invalidRecord: "INVALID_RECORD"
        case .unstableOffsetCommit: "UNSTABLE_OFFSET_COMMIT"
        case .throttlingQuotaExceeded: "THROTTLING_QUOTA_EXCEEDED"
        case .producerFenced: "PRODUCER_FENCED"
        case .resourceNotFound: "RESOURCE_NOT_FOUND"
        case .duplicateResource: "DUPLICATE_RESOURCE"
        case .unacceptableCredential: "UNACCEPTABLE_CREDENTIAL"
        case .inconsistentVoterSet: "INCONSISTENT_VOTER_SET"
        case .invalidUpdateVersion: "INVALID_UPDATE_VERSION"
        case .featureUpdateFailed: "FEATURE_UPDATE_FAILED"
        case .principalDeserializationFailure: "PRINCIPAL_DESERIALIZATION_FAILURE"
        case .snapshotNotFound: "SNAPSHOT_NOT_FOUND"
        case .positionOutOfRange: "POSITION_OUT_OF_RANGE"
        case .unknownTopicId: "UNKNOWN_TOPIC_ID"
        case .duplicateBrokerRegistration: "DUPLICATE_BROKER_REGISTRATION"
        case .brokerIdNotRegistered: "BROKER_ID_NOT_REGISTERED"
        case .inconsistentTopicId: "INCONSISTENT_TOPIC_ID"
        case .inconsistentClusterId: "INCONSISTENT_CLUSTER_ID"
        case .transactionalIdNotFound: "TRANSACTIONAL_ID_NOT_FOUND"
        case .fetchSessionTopicIdError: "FETCH_SESSION_TOPIC_ID_ERROR"
        case .ineligibleReplica: "INELIGIBLE_REPLICA"
        case .newLeaderElected: "NEW_LEADER_ELECTED"
        case .offsetMovedToTieredStorage: "OFFSET_MOVED_TO_TIERED_STORAGE"
        case .fencedMemberEpoch: "FENCED_MEMBER_EPOCH"
        case .unreleasedInstanceId: "UNRELEASED_INSTANCE_ID"
        case .unsupportedAssignor: "UNSUPPORTED_ASSIGNOR"
        case .staleMemberEpoch: "STALE_MEMBER_EPOCH"
        case .mismatchedEndpointType: "MISMATCHED_ENDPOINT_TYPE"
        case .unsupportedEndpointType: "UNSUPPORTED_ENDPOINT_TYPE"
        case .unknownControllerId: "UNKNOWN_CONTROLLER_ID"
        case .unknownSubscriptionId: "UNKNOWN_SUBSCRIPTION_ID"
        case .telemetryTooLarge: "TELEMETRY_TOO_LARGE"
        case .invalidRegistration: "INVALID_REGISTRATION"
        case .transactionAbortable: "TRANSACTION_ABORTABLE"
        }
    }

    /// True for the codes Kafka marks as retriable (the client retries the same request).
    public var isRetriable: Bool {
        switch self {
        case .corruptMessage, .unknownTopicOrPartition, .leaderNotAvailable, .notLeaderOrFollower, .requestTimedOut, .networkException, .coordinatorLoadInProgress, .coordinatorNotAvailable, .notCoordinator, .notEnoughReplicas, .notEnoughReplicasAfterAppend, .notController, .concurrentTransactions, .kafkaStorageError, .fetchSessionIdNotFound, .invalidFetchSessionEpoch, .listenerNotFound, .fencedLeaderEpoch, .unknownLeaderEpoch, .offsetNotAvailable, .preferredLeaderNotAvailable, .eligibleLeadersNotAvailable, .unstableOffsetCommit, .throttlingQuotaExceeded, .unknownTopicId, .inconsistentTopicId, .fetchSessionTopicIdError: true
        default: false
        }
    }

    public var description: String { "\(name) (\(rawValue))" }
}
