import KafkaProtocol
import WoodpeckerCore

extension Broker {
    func createTopics(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(CreateTopicsRequest.self, r)
        var resp = CreateTopicsResponse()
        for t in req.topics {
            var res = CreateTopicsResponse.CreatableTopicResult(name: t.name)
            res.errorMessage = nil
            var configs: [String: String] = [:]
            for c in t.configs { if let v = c.value { configs[c.name] = v } }
            do {
                if t.replicationFactor > 1 {
                    // Kafka's answer when the factor exceeds the brokers available (here one); durability comes from
                    // object storage (or the LogStore quorum), not from broker replicas.
                    throw TopicManager.CreateError.invalidReplicationFactor(
                        "replication factor \(t.replicationFactor) is larger than the 1 broker available; this broker keeps data durable in object storage (or its LogStore quorum), so use 1 or -1")
                }
                let rec = try await topics.create(t.name, partitions: t.numPartitions, configs: configs, validateOnly: req.validateOnly)
                res.topicId = rec.topicId
                res.numPartitions = rec.partitions
                res.replicationFactor = 1
                if r.version >= 5 {
                    res.configs = config.topicConfigs(of: rec).sorted { $0.key < $1.key }.map {
                        .init(name: $0.key, value: $0.value, readOnly: false, configSource: config.topicConfigSource($0.key, of: rec),
                              isSensitive: false)
                    }
                }
            } catch {
                (res.errorCode, res.errorMessage) = topicRequestError(error, topic: t.name, doing: "create")
            }
            resp.topics.append(res)
        }
        return respond(resp, r)
    }

    func deleteTopics(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(DeleteTopicsRequest.self, r)
        var resp = DeleteTopicsResponse()
        var names: [(String?, KafkaUUID)] = req.topicNames.map { ($0, .zero) }
        names += req.topics.map { ($0.name, $0.topicId) }
        for (name, id) in names {
            var res = DeleteTopicsResponse.DeletableTopicResult(name: name, topicId: id)
            var resolved = name
            if resolved == nil {
                resolved = await topics.allTopics().first { $0.topicId == id }?.name
            }
            guard let topicName = resolved else {
                res.errorCode = KafkaErrorCode.unknownTopicId.rawValue
                resp.responses.append(res)
                continue
            }
            res.name = topicName
            do {
                if !(try await topics.delete(topicName)) { res.errorCode = KafkaErrorCode.unknownTopicOrPartition.rawValue }
            } catch {
                res.errorCode = KafkaErrorCode.kafkaStorageError.rawValue
                res.errorMessage = "\(error)"
            }
            resp.responses.append(res)
        }
        return respond(resp, r)
    }

    func createPartitions(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(CreatePartitionsRequest.self, r)
        var resp = CreatePartitionsResponse()
        let listed = req.topics.reduce(into: [String: Int]()) { $0[$1.name, default: 0] += 1 }
        for t in req.topics {
            var res = CreatePartitionsResponse.CreatePartitionsTopicResult(name: t.name)
            if listed[t.name, default: 0] > 1 {
                res.errorCode = KafkaErrorCode.invalidRequest.rawValue
                res.errorMessage = "Duplicate topic name \(t.name) in the request."
                resp.results.append(res)
                continue
            }
            do {
                try await topics.addPartitions(t.name, to: t.count, validateOnly: req.validateOnly)
            } catch {
                (res.errorCode, res.errorMessage) = topicRequestError(error, topic: t.name, doing: "add partitions to")
            }
            resp.results.append(res)
        }
        return respond(resp, r)
    }

    /// DescribeConfigs for topics (every config with its value and whether it is the default) and the broker.
    func describeConfigs(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(DescribeConfigsRequest.self, r)
        var resp = DescribeConfigsResponse()
        for res in req.resources {
            var out = DescribeConfigsResponse.DescribeConfigsResult(resourceType: res.resourceType, resourceName: res.resourceName)
            out.errorMessage = nil
            var entries: [String: String] = [:]
            var topic: TopicRecord?
            switch res.resourceType {
            case 2:  // topic
                guard let t = try await topics.topic(res.resourceName) else {
                    out.errorCode = KafkaErrorCode.unknownTopicOrPartition.rawValue
                    resp.results.append(out)
                    continue
                }
                entries = config.topicConfigs(of: t)
                topic = t
            case 4:  // broker
                entries = ["broker.id": String(config.nodeId), "num.partitions": String(config.defaultPartitions),
                           "auto.create.topics.enable": String(config.autoCreateTopics),
                           "socket.request.max.bytes": String(config.maxRequestBytes)]
            default:
                out.errorCode = KafkaErrorCode.invalidRequest.rawValue
                out.errorMessage = "unsupported resource type \(res.resourceType)"
                resp.results.append(out)
                continue
            }
            let wanted = res.configurationKeys.map(Set.init)
            for (k, v) in entries.sorted(by: { $0.key < $1.key }) where wanted?.contains(k) ?? true {
                // A broker's settings are all static (set when it starts).
                let source = topic.map { config.topicConfigSource(k, of: $0) } ?? 4
                var e = DescribeConfigsResponse.DescribeConfigsResourceResult(name: k, value: v)
                e.isDefault = source == 5
                e.configSource = source
                e.documentation = nil
                out.configs.append(e)
            }
            resp.results.append(out)
        }
        return respond(resp, r)
    }

    /// AlterConfigs: each topic's own configs become exactly the ones listed (a null value or an omitted config
    /// follows the broker's default again).
    func alterConfigs(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(AlterConfigsRequest.self, r)
        var resp = AlterConfigsResponse()
        for res in req.resources {
            var listed: [String: String] = [:]
            for c in res.configs { if let v = c.value { listed[c.name] = v } }
            let set = listed
            let (code, message) = await alterTopicConfigs(res.resourceType, res.resourceName, validateOnly: req.validateOnly) { _ in set }
            resp.responses.append(.init(errorCode: code, errorMessage: message, resourceType: res.resourceType,
                                        resourceName: res.resourceName))
        }
        return respond(resp, r)
    }

    /// IncrementalAlterConfigs: SET (0) and DELETE (1, back to the broker's default) per config; APPEND and SUBTRACT
    /// apply to list configs, and this broker has none that takes more than one value.
    func incrementalAlterConfigs(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(IncrementalAlterConfigsRequest.self, r)
        var resp = IncrementalAlterConfigsResponse()
        for res in req.resources {
            let known = config.defaultTopicConfigs
            let (code, message) = await alterTopicConfigs(res.resourceType, res.resourceName, validateOnly: req.validateOnly) { current in
                var next = current
                var seen: Set<String> = []
                for c in res.configs {
                    guard seen.insert(c.name).inserted else {
                        throw TopicManager.CreateError.invalidRequest("\(c.name) is listed more than once")
                    }
                    switch c.configOperation {
                    case 0:
                        guard let v = c.value else { throw TopicManager.CreateError.invalidRequest("\(c.name): SET needs a value") }
                        next[c.name] = v
                    case 1:
                        guard known[c.name] != nil else { throw TopicManager.CreateError.invalidConfig("unknown topic config \(c.name)") }
                        next[c.name] = nil
                    case 2, 3:
                        throw TopicManager.CreateError.invalidRequest("\(c.name): APPEND and SUBTRACT apply to list configs; use SET")
                    default:
                        throw TopicManager.CreateError.invalidRequest("\(c.name): unknown config operation \(c.configOperation)")
                    }
                }
                return next
            }
            resp.responses.append(.init(errorCode: code, errorMessage: message, resourceType: res.resourceType,
                                        resourceName: res.resourceName))
        }
        return respond(resp, r)
    }

    /// Changes one resource's configs; returns the Kafka error code and message for its result.
    private func alterTopicConfigs(_ type: Int8, _ name: String, validateOnly: Bool,
                                   _ change: @Sendable ([String: String]) throws -> [String: String]) async -> (Int16, String?) {
        switch type {
        case 2:
            do {
                try await topics.alterConfigs(name, validateOnly: validateOnly, change)
                return (0, nil)
            } catch {
                return topicRequestError(error, topic: name, doing: "change the configs of")
            }
        case 4:
            return (KafkaErrorCode.invalidRequest.rawValue,
                    "broker configs are set when the broker starts (flags, WOODPECKER_* variables, config file)")
        default:
            return (KafkaErrorCode.invalidRequest.rawValue, "unsupported resource type \(type)")
        }
    }

    /// The Kafka error code and message for a topic request that failed: a refusal (`TopicManager.CreateError`) gets
    /// its own code; a topic that does not exist UNKNOWN_TOPIC_OR_PARTITION; the metadata store away or failing a
    /// per-topic error, REQUEST_TIMED_OUT (retriable) when the cause is retryable, instead of dropping the client's
    /// connection. `doing` completes "cannot ... topic NAME".
    func topicRequestError(_ error: any Error, topic: String, doing: String) -> (Int16, String?) {
        switch error {
        case let e as TopicManager.CreateError:
            switch e {
            case .exists: return (KafkaErrorCode.topicAlreadyExists.rawValue, "Topic '\(topic)' already exists.")
            case .invalidName: return (KafkaErrorCode.invalidTopicException.rawValue, "invalid topic name \(topic)")
            case let .invalidPartitions(m): return (KafkaErrorCode.invalidPartitions.rawValue, m)
            case let .invalidReplicationFactor(m): return (KafkaErrorCode.invalidReplicationFactor.rawValue, m)
            case let .invalidConfig(m): return (KafkaErrorCode.invalidConfig.rawValue, m)
            case let .invalidRequest(m): return (KafkaErrorCode.invalidRequest.rawValue, m)
            }
        case let e as WoodpeckerError where e.code == .logNotFound:
            return (KafkaErrorCode.unknownTopicOrPartition.rawValue, e.message)
        case let e as WoodpeckerError:
            Diagnostics.warn("cannot \(doing) topic \(topic): \(e)")
            return ((e.isRetryable ? KafkaErrorCode.requestTimedOut : .unknownServerError).rawValue,
                    "cannot \(doing) topic \(topic): \(e.message)")
        default:
            Diagnostics.warn("cannot \(doing) topic \(topic): \(error)")
            return (KafkaErrorCode.unknownServerError.rawValue, "cannot \(doing) topic \(topic): \(error)")
        }
    }
}
