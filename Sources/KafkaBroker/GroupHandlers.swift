import Foundation
import KafkaProtocol
import WoodpeckerCore

/// Consumer-group APIs: request decoding and response shaping per version; the state lives in `GroupCoordinator`.
extension Broker {
    private func clientHost(_ r: KafkaRequest) -> String {
        // Kafka reports "/<ip>"; the peer address is "ip:port".
        let host = r.peer.split(separator: ":").dropLast().joined(separator: ":")
        return "/" + (host.isEmpty ? r.peer : host)
    }

    func joinGroup(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(JoinGroupRequest.self, r)
        let metadataBytes = req.protocols.reduce(0) { $0 + $1.metadata.count }
        guard metadataBytes <= config.groups.maxMemberMetadataBytes else {
            var resp = JoinGroupResponse()
            resp.errorCode = KafkaErrorCode.invalidRequest.rawValue
            resp.memberId = req.memberId
            resp.protocolName = r.version >= 7 ? nil : ""
            Diagnostics.warn("JoinGroup \(req.groupId) from \(r.clientId ?? "?"): \(metadataBytes) bytes of protocol metadata exceed \(config.groups.maxMemberMetadataBytes)")
            return respond(resp, r)
        }
        let params = GroupCoordinator.JoinParams(
            groupId: req.groupId, memberId: req.memberId, instanceId: r.version >= 5 ? req.groupInstanceId : nil,
            sessionTimeoutMs: req.sessionTimeoutMs,
            rebalanceTimeoutMs: r.version >= 1 && req.rebalanceTimeoutMs > 0 ? req.rebalanceTimeoutMs : req.sessionTimeoutMs,
            protocolType: req.protocolType, protocols: req.protocols.map { ($0.name, $0.metadata) },
            clientId: r.clientId ?? "", clientHost: clientHost(r), requireKnownMemberId: r.version >= 4)
        let res = await groups.join(params)
        var resp = JoinGroupResponse()
        resp.errorCode = res.error?.rawValue ?? 0
        resp.generationId = res.generation
        resp.protocolType = res.protocolType
        resp.protocolName = r.version >= 7 ? res.protocolName : (res.protocolName ?? "")
        resp.leader = res.leader
        resp.memberId = res.memberId
        resp.members = res.members.map { .init(memberId: $0.id, groupInstanceId: $0.instanceId, metadata: $0.metadata) }
        return respond(resp, r)
    }

    func syncGroup(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(SyncGroupRequest.self, r)
        let assignmentBytes = req.assignments.reduce(0) { $0 + $1.assignment.count }
        guard assignmentBytes <= config.groups.maxMemberMetadataBytes else {
            var resp = SyncGroupResponse()
            resp.errorCode = KafkaErrorCode.invalidRequest.rawValue
            Diagnostics.warn("SyncGroup \(req.groupId): \(assignmentBytes) bytes of assignments exceed \(config.groups.maxMemberMetadataBytes)")
            return respond(resp, r)
        }
        let res = await groups.sync(groupId: req.groupId, generation: req.generationId, memberId: req.memberId,
                                    instanceId: r.version >= 3 ? req.groupInstanceId : nil,
                                    protocolType: r.version >= 5 ? req.protocolType : nil,
                                    protocolName: r.version >= 5 ? req.protocolName : nil,
                                    assignments: req.assignments.map { ($0.memberId, $0.assignment) })
        var resp = SyncGroupResponse()
        resp.errorCode = res.error?.rawValue ?? 0
        resp.assignment = res.assignment
        resp.protocolType = res.protocolType
        resp.protocolName = res.protocolName
        return respond(resp, r)
    }

    func heartbeat(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(HeartbeatRequest.self, r)
        let err = await groups.heartbeat(groupId: req.groupId, generation: req.generationId, memberId: req.memberId,
                                         instanceId: r.version >= 3 ? req.groupInstanceId : nil)
        var resp = HeartbeatResponse()
        resp.errorCode = err?.rawValue ?? 0
        return respond(resp, r)
    }

    func leaveGroup(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(LeaveGroupRequest.self, r)
        var resp = LeaveGroupResponse()
        if r.version >= 3 {
            let who = req.members.map { (memberId: $0.memberId, instanceId: $0.groupInstanceId) }
            let errs = await groups.leave(groupId: req.groupId, members: who)
            resp.members = zip(req.members, errs).map {
                .init(memberId: $0.memberId, groupInstanceId: $0.groupInstanceId, errorCode: $1?.rawValue ?? 0)
            }
        } else {
            let errs = await groups.leave(groupId: req.groupId, members: [(memberId: req.memberId, instanceId: nil)])
            resp.errorCode = errs.first??.rawValue ?? 0
        }
        return respond(resp, r)
    }

    func offsetCommit(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(OffsetCommitRequest.self, r)
        var resp = OffsetCommitResponse()
        let groupError: KafkaErrorCode?
        if req.groupId.isEmpty {
            groupError = .invalidGroupId
        } else {
            groupError = await groups.validateCommit(groupId: req.groupId, generation: req.generationIdOrMemberEpoch,
                                                     memberId: req.memberId,
                                                     instanceId: r.version >= 7 ? req.groupInstanceId : nil)
        }
        var entries: [(topic: String, partition: Int32, value: CommittedOffset)] = []
        var codes: [[Int16]] = []
        let nowWall = Int64(Clock.wallMillis())
        for t in req.topics {
            var tc: [Int16] = []
            let topic = groupError == nil ? try await topics.topic(t.name) : nil
            for p in t.partitions {
                if let groupError { tc.append(groupError.rawValue); continue }
                guard let topic, p.partitionIndex >= 0, p.partitionIndex < topic.partitions else {
                    tc.append(KafkaErrorCode.unknownTopicOrPartition.rawValue); continue
                }
                if (p.committedMetadata?.utf8.count ?? 0) > config.groups.maxOffsetMetadataBytes {
                    tc.append(KafkaErrorCode.offsetMetadataTooLarge.rawValue); continue
                }
                entries.append((t.name, p.partitionIndex,
                                CommittedOffset(offset: p.committedOffset, leaderEpoch: p.committedLeaderEpoch,
                                                metadata: p.committedMetadata ?? "",
                                                commitTimestamp: p.commitTimestamp >= 0 ? p.commitTimestamp : nowWall)))
                tc.append(0)
            }
            codes.append(tc)
        }
        if !entries.isEmpty {
            do {
                try await groups.storeOffsets(group: req.groupId, entries)
            } catch {
                Diagnostics.warn("OffsetCommit for group \(req.groupId): \(error)")
                codes = codes.map { $0.map { $0 == 0 ? KafkaErrorCode.coordinatorNotAvailable.rawValue : $0 } }
            }
        }
        resp.topics = zip(req.topics, codes).map { t, tc in
            .init(name: t.name, partitions: zip(t.partitions, tc).map { .init(partitionIndex: $0.partitionIndex, errorCode: $1) })
        }
        return respond(resp, r)
    }

    func offsetFetch(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(OffsetFetchRequest.self, r)
        var resp = OffsetFetchResponse()
        // One (group, topics?) lookup; nil topics = every committed offset of the group (v2+).
        func lookup(_ group: String, _ wanted: [(String, [Int32])]?) async -> (KafkaErrorCode?, [(String, [(Int32, CommittedOffset?)])]) {
            let committed: [String: [Int32: CommittedOffset]]
            do {
                committed = try await groups.committedOffsets(group: group)
            } catch {
                Diagnostics.warn("OffsetFetch for group \(group): \(error)")
                return (.coordinatorNotAvailable, (wanted ?? []).map { ($0.0, $0.1.map { ($0, nil) }) })
            }
            if let wanted {
                return (nil, wanted.map { t, ps in (t, ps.map { ($0, committed[t]?[$0]) }) })
            }
            return (nil, committed.keys.sorted().map { t in (t, committed[t]!.keys.sorted().map { ($0, committed[t]![$0]) }) })
        }
        if r.version >= 8 {
            for g in req.groups {
                let (err, found) = await lookup(g.groupId, g.topics.map { $0.map { ($0.name, $0.partitionIndexes) } })
                resp.groups.append(.init(groupId: g.groupId, topics: found.map { t, ps in
                    .init(name: t, partitions: ps.map { p, c in
                        .init(partitionIndex: p, committedOffset: c?.offset ?? -1, committedLeaderEpoch: c?.leaderEpoch ?? -1,
                              metadata: c?.metadata ?? "", errorCode: 0)
                    })
                }, errorCode: err?.rawValue ?? 0))
            }
        } else {
            let wanted = r.version >= 2 ? req.topics : (req.topics ?? [])
            let (err, found) = await lookup(req.groupId, wanted.map { $0.map { ($0.name, $0.partitionIndexes) } })
            resp.topics = found.map { t, ps in
                .init(name: t, partitions: ps.map { p, c in
                    .init(partitionIndex: p, committedOffset: c?.offset ?? -1, committedLeaderEpoch: c?.leaderEpoch ?? -1,
                          metadata: c?.metadata ?? "", errorCode: r.version < 2 ? (err?.rawValue ?? 0) : 0)
                })
            }
            resp.errorCode = err?.rawValue ?? 0
        }
        return respond(resp, r)
    }

    func listGroups(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(ListGroupsRequest.self, r)
        var resp = ListGroupsResponse()
        var listed: [String: ListGroupsResponse.ListedGroup] = [:]
        for g in await groups.activeGroups() {
            listed[g.groupId] = .init(groupId: g.groupId, protocolType: g.protocolType, groupState: g.state, groupType: "classic")
        }
        do {
            for name in try await groups.groupsWithOffsets() where listed[name] == nil {
                listed[name] = .init(groupId: name, protocolType: "consumer", groupState: "Empty", groupType: "classic")
            }
        } catch {
            resp.errorCode = KafkaErrorCode.coordinatorNotAvailable.rawValue
        }
        let states = r.version >= 4 ? Set(req.statesFilter.map { $0.lowercased() }) : []
        let types = r.version >= 5 ? Set(req.typesFilter.map { $0.lowercased() }) : []
        resp.groups = listed.values.sorted { $0.groupId < $1.groupId }.filter {
            (states.isEmpty || states.contains($0.groupState.lowercased())) && (types.isEmpty || types.contains($0.groupType))
        }
        return respond(resp, r)
    }

    func describeGroups(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(DescribeGroupsRequest.self, r)
        var resp = DescribeGroupsResponse()
        for id in req.groups {
            var d = DescribeGroupsResponse.DescribedGroup(groupId: id)
            if let s = await groups.summary(id) {
                d.groupState = s.state
                d.protocolType = s.protocolType
                d.protocolData = s.protocolName
                d.members = s.members.map {
                    .init(memberId: $0.id, groupInstanceId: $0.instanceId, clientId: $0.clientId, clientHost: $0.clientHost,
                          memberMetadata: $0.metadata, memberAssignment: $0.assignment)
                }
            } else if (try? await groups.hasOffsets(group: id)) == true {
                d.groupState = "Empty"
                d.protocolType = "consumer"
            } else {
                // Kafka answers an unknown group with state "Dead" (v0-5) and no error.
                d.groupState = "Dead"
            }
            resp.groups.append(d)
        }
        return respond(resp, r)
    }

    func deleteGroups(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(DeleteGroupsRequest.self, r)
        var resp = DeleteGroupsResponse()
        for id in req.groupsNames {
            var code: KafkaErrorCode?
            if await groups.hasMembers(id) {
                code = .nonEmptyGroup
            } else {
                let inMemory = await groups.forget(id)
                do {
                    let had = try await groups.hasOffsets(group: id)
                    if had { try await groups.deleteAllOffsets(group: id) }
                    if !had && !inMemory { code = .groupIdNotFound }
                } catch {
                    Diagnostics.warn("DeleteGroups \(id): \(error)")
                    code = .coordinatorNotAvailable
                }
            }
            resp.results.append(.init(groupId: id, errorCode: code?.rawValue ?? 0))
        }
        return respond(resp, r)
    }

    func offsetDelete(_ r: KafkaRequest) async throws -> KafkaResponseOutcome {
        let req = try decode(OffsetDeleteRequest.self, r)
        var resp = OffsetDeleteResponse()
        let hasMembers = await groups.hasMembers(req.groupId)
        let hasOffsets = (try? await groups.hasOffsets(group: req.groupId)) ?? false
        guard hasMembers || hasOffsets else {
            resp.errorCode = KafkaErrorCode.groupIdNotFound.rawValue
            return respond(resp, r)
        }
        let subscribed = await groups.subscribedTopics(req.groupId)
        var toDelete: [(topic: String, partition: Int32)] = []
        for t in req.topics {
            var out = OffsetDeleteResponse.OffsetDeleteResponseTopic(name: t.name)
            for p in t.partitions {
                if subscribed.contains(t.name) {
                    out.partitions.append(.init(partitionIndex: p.partitionIndex, errorCode: KafkaErrorCode.groupSubscribedToTopic.rawValue))
                } else {
                    toDelete.append((t.name, p.partitionIndex))
                    out.partitions.append(.init(partitionIndex: p.partitionIndex, errorCode: 0))
                }
            }
            resp.topics.append(out)
        }
        do {
            try await groups.deleteOffsets(group: req.groupId, toDelete)
        } catch {
            Diagnostics.warn("OffsetDelete \(req.groupId): \(error)")
            resp.errorCode = KafkaErrorCode.coordinatorNotAvailable.rawValue
        }
        return respond(resp, r)
    }
}
