import Foundation
import KafkaBroker
import KafkaProtocol
import Testing
import WoodpeckerCore

private func joinRequest(_ group: String, member: String = "", session: Int32 = 10_000, rebalance: Int32 = 10_000,
                         protocols: [(String, [UInt8])] = [("range", [1, 2, 3])]) -> JoinGroupRequest {
    JoinGroupRequest(groupId: group, sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, memberId: member,
                     protocolType: "consumer", protocols: protocols.map { .init(name: $0.0, metadata: $0.1) })
}

extension TestClient {
    /// JoinGroup v5 including the MEMBER_ID_REQUIRED round trip.
    func joinGroup(_ group: String, session: Int32 = 10_000, rebalance: Int32 = 10_000,
                   protocols: [(String, [UInt8])] = [("range", [1, 2, 3])]) async throws -> JoinGroupResponse {
        let first = try await call(joinRequest(group, session: session, rebalance: rebalance, protocols: protocols),
                                   version: 5, JoinGroupResponse.self)
        guard first.errorCode == KafkaErrorCode.memberIdRequired.rawValue, !first.memberId.isEmpty else {
            throw TestFailure("first v5 join: error \(first.errorCode), member '\(first.memberId)'")
        }
        return try await call(joinRequest(group, member: first.memberId, session: session, rebalance: rebalance,
                                          protocols: protocols), version: 5, JoinGroupResponse.self)
    }

    func syncGroup(_ group: String, generation: Int32, member: String, assignments: [(String, [UInt8])] = [])
        async throws -> SyncGroupResponse {
        try await call(SyncGroupRequest(groupId: group, generationId: generation, memberId: member,
                                        assignments: assignments.map { .init(memberId: $0.0, assignment: $0.1) }),
                       version: 3, SyncGroupResponse.self)
    }

    func heartbeat(_ group: String, generation: Int32, member: String) async throws -> Int16 {
        try await call(HeartbeatRequest(groupId: group, generationId: generation, memberId: member), version: 3,
                       HeartbeatResponse.self).errorCode
    }

    func commit(_ group: String, topic: String, _ offsets: [(Int32, Int64, String?)], generation: Int32 = -1,
                member: String = "", version: Int16 = 8) async throws -> OffsetCommitResponse {
        var req = OffsetCommitRequest()
        req.groupId = group
        req.generationIdOrMemberEpoch = generation
        req.memberId = member
        req.topics = [.init(name: topic, partitions: offsets.map {
            .init(partitionIndex: $0.0, committedOffset: $0.1, committedLeaderEpoch: 3, committedMetadata: $0.2)
        })]
        return try await call(req, version: version, OffsetCommitResponse.self)
    }

    /// OffsetFetch v1 for one topic: partition → (offset, metadata).
    func fetchOffsetsV1(_ group: String, topic: String, partitions: [Int32]) async throws -> [Int32: (Int64, String?)] {
        var req = OffsetFetchRequest()
        req.groupId = group
        req.topics = [.init(name: topic, partitionIndexes: partitions)]
        let r = try await call(req, version: 1, OffsetFetchResponse.self)
        var out: [Int32: (Int64, String?)] = [:]
        for t in r.topics where t.name == topic { for p in t.partitions { out[p.partitionIndex] = (p.committedOffset, p.metadata) } }
        return out
    }
}

@Suite("Consumer groups")
struct GroupTests {
    @Test("two members: one leader, one generation; SyncGroup relays the leader's bytes untouched")
    func twoMembersJoinAndSync() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 300 }) { b in
            let c1 = try await b.connect(), c2 = try await b.connect()
            async let j1 = c1.joinGroup("g1", protocols: [("roundrobin", [9]), ("range", [1])])
            async let j2 = c2.joinGroup("g1", protocols: [("range", [2]), ("roundrobin", [8])])
            let (r1, r2) = try await (j1, j2)
            #expect(r1.errorCode == 0 && r2.errorCode == 0)
            #expect(r1.generationId == r2.generationId && r1.generationId >= 1)
            #expect(r1.leader == r2.leader)
            #expect([r1.memberId, r2.memberId].contains(r1.leader))
            #expect(r1.memberId != r2.memberId)
            #expect(r1.protocolName == r2.protocolName && ["range", "roundrobin"].contains(r1.protocolName ?? ""))
            let (leaderC, leader, followerC, follower) = r1.leader == r1.memberId ? (c1, r1, c2, r2) : (c2, r2, c1, r1)
            #expect(leader.members.count == 2)
            #expect(follower.members.isEmpty)
            let a1: [UInt8] = [0, 1, 0xFF, 0, 7, 42], a2: [UInt8] = Array(repeating: 0xAB, count: 300)
            async let fs = followerC.syncGroup("g1", generation: follower.generationId, member: follower.memberId)
            try await Task.sleep(nanoseconds: 100_000_000)
            let ls = try await leaderC.syncGroup("g1", generation: leader.generationId, member: leader.memberId,
                                                 assignments: [(leader.memberId, a1), (follower.memberId, a2)])
            let fsr = try await fs
            #expect(ls.errorCode == 0 && ls.assignment == a1)
            #expect(fsr.errorCode == 0 && fsr.assignment == a2)
            #expect(try await c1.heartbeat("g1", generation: r1.generationId, member: r1.memberId) == 0)
            await c1.close(); await c2.close()
        }
    }

    @Test("heartbeat: 27 during a rebalance, 22 for a stale generation, 25 for an unknown member")
    func heartbeatErrors() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 0 }) { b in
            let c1 = try await b.connect(), c2 = try await b.connect()
            let r1 = try await c1.joinGroup("g2")
            #expect(r1.errorCode == 0 && r1.leader == r1.memberId)
            let s1 = try await c1.syncGroup("g2", generation: r1.generationId, member: r1.memberId, assignments: [(r1.memberId, [1])])
            #expect(s1.errorCode == 0 && s1.assignment == [1])
            #expect(try await c1.heartbeat("g2", generation: r1.generationId, member: r1.memberId) == 0)
            #expect(try await c1.heartbeat("g2", generation: r1.generationId + 5, member: r1.memberId) == KafkaErrorCode.illegalGeneration.rawValue)
            #expect(try await c1.heartbeat("g2", generation: r1.generationId, member: "nobody") == KafkaErrorCode.unknownMemberId.rawValue)
            #expect(try await c1.heartbeat("no-such-group", generation: 1, member: "x") == KafkaErrorCode.unknownMemberId.rawValue)
            // A second member joining puts the group into PreparingRebalance until member 1 rejoins.
            async let j2 = c2.joinGroup("g2")
            try await Task.sleep(nanoseconds: 200_000_000)
            #expect(try await c1.heartbeat("g2", generation: r1.generationId, member: r1.memberId) == KafkaErrorCode.rebalanceInProgress.rawValue)
            let sync = try await c1.syncGroup("g2", generation: r1.generationId, member: r1.memberId)
            #expect(sync.errorCode == KafkaErrorCode.rebalanceInProgress.rawValue)
            let rj = try await c1.call(joinRequest("g2", member: r1.memberId), version: 5, JoinGroupResponse.self)
            let r2 = try await j2
            #expect(rj.errorCode == 0 && r2.errorCode == 0)
            #expect(rj.generationId == r1.generationId + 1 && r2.generationId == rj.generationId)
            #expect(rj.leader == r1.memberId)
            // The old generation is now stale.
            #expect(try await c1.heartbeat("g2", generation: r1.generationId, member: r1.memberId) == KafkaErrorCode.illegalGeneration.rawValue)
            // A different protocol type is refused.
            var bad = joinRequest("g2")
            bad.protocolType = "connect"
            let j3 = try await c2.call(bad, version: 3, JoinGroupResponse.self)
            #expect(j3.errorCode == KafkaErrorCode.inconsistentGroupProtocol.rawValue)
            await c1.close(); await c2.close()
        }
    }

    @Test("a member whose session times out is removed and the group rebalances without it")
    func sessionTimeout() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 0; $0.groups.minSessionTimeoutMs = 100 }) { b in
            let c1 = try await b.connect(), c2 = try await b.connect()
            let r1 = try await c1.joinGroup("g3", session: 600, rebalance: 3_000)
            _ = try await c1.syncGroup("g3", generation: r1.generationId, member: r1.memberId, assignments: [])
            // c1 never heartbeats: c2's join waits for it, then the session expiry removes it.
            let start = nowMs()
            let r2 = try await c2.joinGroup("g3", session: 10_000, rebalance: 10_000)
            #expect(r2.errorCode == 0)
            #expect(r2.leader == r2.memberId)
            #expect(r2.members.map(\.memberId) == [r2.memberId])
            #expect(nowMs() - start < 5_000)
            #expect(try await c1.heartbeat("g3", generation: r1.generationId, member: r1.memberId) == KafkaErrorCode.unknownMemberId.rawValue)
            await c1.close(); await c2.close()
        }
    }

    @Test("LeaveGroup (v1 single, v3 batched) triggers a rebalance; the remaining member leads")
    func leaveGroup() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 300 }) { b in
            let c1 = try await b.connect(), c2 = try await b.connect()
            async let j1 = c1.joinGroup("g4")
            async let j2 = c2.joinGroup("g4")
            let (r1, r2) = try await (j1, j2)
            #expect(r1.generationId == r2.generationId)
            let (stay, stayC, go, goC) = r1.leader == r1.memberId ? (r2, c2, r1, c1) : (r1, c1, r2, c2)
            var leave = LeaveGroupRequest()
            leave.groupId = "g4"
            leave.members = [.init(memberId: go.memberId), .init(memberId: "ghost")]
            let lr = try await goC.call(leave, version: 3, LeaveGroupResponse.self)
            #expect(lr.errorCode == 0)
            #expect(lr.members.map(\.errorCode) == [0, KafkaErrorCode.unknownMemberId.rawValue])
            #expect(try await stayC.heartbeat("g4", generation: stay.generationId, member: stay.memberId) == KafkaErrorCode.rebalanceInProgress.rawValue)
            let rj = try await stayC.call(joinRequest("g4", member: stay.memberId), version: 5, JoinGroupResponse.self)
            #expect(rj.errorCode == 0 && rj.generationId == stay.generationId + 1 && rj.leader == stay.memberId)
            #expect(rj.members.map(\.memberId) == [stay.memberId])
            let v1 = try await stayC.call(LeaveGroupRequest(groupId: "g4", memberId: stay.memberId), version: 1, LeaveGroupResponse.self)
            #expect(v1.errorCode == 0)
            let again = try await stayC.call(LeaveGroupRequest(groupId: "g4", memberId: stay.memberId), version: 1, LeaveGroupResponse.self)
            #expect(again.errorCode == KafkaErrorCode.unknownMemberId.rawValue)
            await c1.close(); await c2.close()
        }
    }

    @Test("Oversized member metadata or assignments get INVALID_REQUEST and leave the group as it was")
    func oversizedMetadataIsRefused() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            let huge = [UInt8](repeating: 7, count: (1 << 20) + 1)
            let bad = try await c.call(joinRequest("big", protocols: [("range", huge)]), version: 5, JoinGroupResponse.self)
            #expect(bad.errorCode == KafkaErrorCode.invalidRequest.rawValue)
            var describe = DescribeGroupsRequest()
            describe.groups = ["big"]
            let d0 = try await c.call(describe, version: 5, DescribeGroupsResponse.self)
            #expect(d0.groups.first?.members.isEmpty == true, "a refused join must not add a member")
            let ok = try await c.joinGroup("big")
            #expect(ok.errorCode == 0)
            let sync = try await c.syncGroup("big", generation: ok.generationId, member: ok.memberId,
                                             assignments: [(ok.memberId, huge)])
            #expect(sync.errorCode == KafkaErrorCode.invalidRequest.rawValue)
            let fine = try await c.syncGroup("big", generation: ok.generationId, member: ok.memberId,
                                             assignments: [(ok.memberId, [1, 2])])
            #expect(fine.errorCode == 0 && fine.assignment == [1, 2])
            let d1 = try await c.call(describe, version: 5, DescribeGroupsResponse.self)
            #expect(d1.groups.first?.members.count == 1 && d1.groups.first?.groupState == "Stable")
        }
    }

    @Test("OffsetCommit then OffsetFetch v1 and v8 (batched groups) return offsets and metadata; -1 when none")
    func commitAndFetch() async throws {
        try await withBroker { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("ot", partitions: 3).errorCode == 0)
            let cr = try await c.commit("og", topic: "ot", [(0, 42, "meta-0"), (2, 7, nil)])
            #expect(cr.topics.first?.partitions.map(\.errorCode) == [0, 0])
            let bad = try await c.commit("og", topic: "ot", [(5, 1, "")])
            #expect(bad.topics.first?.partitions.first?.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            let big = try await c.commit("og", topic: "ot", [(1, 1, String(repeating: "x", count: 5_000))])
            #expect(big.topics.first?.partitions.first?.errorCode == KafkaErrorCode.offsetMetadataTooLarge.rawValue)
            let v1 = try await c.fetchOffsetsV1("og", topic: "ot", partitions: [0, 1, 2])
            #expect(v1[0]?.0 == 42 && v1[0]?.1 == "meta-0")
            #expect(v1[1]?.0 == -1)
            #expect(v1[2]?.0 == 7 && v1[2]?.1 == "")
            var req = OffsetFetchRequest()
            req.groups = [.init(groupId: "og", topics: [.init(name: "ot", partitionIndexes: [0, 1])]),
                          .init(groupId: "other", topics: [.init(name: "ot", partitionIndexes: [0])]),
                          .init(groupId: "og", topics: nil)]
            let v8 = try await c.call(req, version: 8, OffsetFetchResponse.self)
            #expect(v8.groups.count == 3)
            let g0 = v8.groups[0].topics.first?.partitions ?? []
            #expect(g0.map(\.committedOffset) == [42, -1])
            #expect(g0.first?.metadata == "meta-0" && g0.first?.committedLeaderEpoch == 3)
            #expect(v8.groups[1].topics.first?.partitions.first?.committedOffset == -1)
            #expect(v8.groups[2].topics.first?.partitions.map(\.partitionIndex) == [0, 2])
            // A committing member of an unknown generation is told to rejoin.
            let stale = try await c.commit("og", topic: "ot", [(0, 1, "")], generation: 3, member: "m")
            #expect(stale.topics.first?.partitions.first?.errorCode == KafkaErrorCode.unknownMemberId.rawValue)
            await c.close()
        }
    }

    @Test("committed offsets survive a broker restart on the on-disk stores")
    func offsetsSurviveRestart() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withBroker(dir: dir) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("rt", partitions: 2).errorCode == 0)
            let r = try await c.commit("group/with spaces", topic: "rt", [(0, 100, "a"), (1, 200, "b")], version: 2)
            #expect(r.topics.first?.partitions.map(\.errorCode) == [0, 0])
            await c.close()
        }
        try await withBroker(dir: dir) { b in
            let c = try await b.connect()
            let v1 = try await c.fetchOffsetsV1("group/with spaces", topic: "rt", partitions: [0, 1])
            #expect(v1[0]?.0 == 100 && v1[0]?.1 == "a")
            #expect(v1[1]?.0 == 200 && v1[1]?.1 == "b")
            let lg = try await c.call(ListGroupsRequest(), version: 3, ListGroupsResponse.self)
            #expect(lg.groups.map(\.groupId).contains("group/with spaces"))
            await c.close()
        }
    }

    @Test("ListGroups, DescribeGroups, DeleteGroups and OffsetDelete")
    func listDescribeDelete() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 0 }) { b in
            let c = try await b.connect()
            #expect(try await c.createTopic("lt").errorCode == 0)
            let r = try await c.joinGroup("live")
            let s = try await c.syncGroup("live", generation: r.generationId, member: r.memberId, assignments: [(r.memberId, [5, 6])])
            #expect(s.errorCode == 0)
            _ = try await c.commit("idle", topic: "lt", [(0, 3, "")])
            let lg = try await c.call(ListGroupsRequest(), version: 4, ListGroupsResponse.self)
            let states = Dictionary(lg.groups.map { ($0.groupId, $0.groupState) }, uniquingKeysWith: { a, _ in a })
            #expect(states["live"] == "Stable" && states["idle"] == "Empty")
            let onlyStable = try await c.call(ListGroupsRequest(statesFilter: ["Stable"]), version: 4, ListGroupsResponse.self)
            #expect(onlyStable.groups.map(\.groupId) == ["live"])
            let dg = try await c.call(DescribeGroupsRequest(groups: ["live", "idle", "nope"]), version: 5, DescribeGroupsResponse.self)
            #expect(dg.groups.map(\.groupState) == ["Stable", "Empty", "Dead"])
            #expect(dg.groups[0].protocolData == "range" && dg.groups[0].members.count == 1)
            #expect(dg.groups[0].members.first?.memberAssignment == [5, 6])
            #expect(dg.groups[0].members.first?.memberMetadata == [1, 2, 3])
            let del = try await c.call(DeleteGroupsRequest(groupsNames: ["live", "idle", "nope"]), version: 2, DeleteGroupsResponse.self)
            #expect(del.results.map(\.errorCode) == [KafkaErrorCode.nonEmptyGroup.rawValue, 0, KafkaErrorCode.groupIdNotFound.rawValue])
            #expect(try await c.fetchOffsetsV1("idle", topic: "lt", partitions: [0])[0]?.0 == -1)
            _ = try await c.commit("od", topic: "lt", [(0, 9, "")])
            var odr = OffsetDeleteRequest()
            odr.groupId = "od"
            odr.topics = [.init(name: "lt", partitions: [.init(partitionIndex: 0)])]
            let od = try await c.call(odr, version: 0, OffsetDeleteResponse.self)
            #expect(od.errorCode == 0 && od.topics.first?.partitions.first?.errorCode == 0)
            #expect(try await c.fetchOffsetsV1("od", topic: "lt", partitions: [0])[0]?.0 == -1)
            await c.close()
        }
    }

    @Test("v3 joins need no member id round trip; static members join directly and a restart fences the old id; bad session timeouts are refused")
    func staticMembershipAndOldVersions() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 0 }) { b in
            let c = try await b.connect()
            let v3 = try await c.call(joinRequest("old"), version: 3, JoinGroupResponse.self)
            #expect(v3.errorCode == 0 && !v3.memberId.isEmpty && v3.leader == v3.memberId && v3.generationId == 1)
            let tiny = try await c.call(joinRequest("old", session: 10), version: 3, JoinGroupResponse.self)
            #expect(tiny.errorCode == KafkaErrorCode.invalidSessionTimeout.rawValue)

            var s = joinRequest("static")
            s.groupInstanceId = "instance-1"
            let first = try await c.call(s, version: 5, JoinGroupResponse.self)
            #expect(first.errorCode == 0 && first.memberId.hasPrefix("instance-1"))
            let sy = try await c.syncGroup("static", generation: first.generationId, member: first.memberId,
                                           assignments: [(first.memberId, [4])])
            #expect(sy.errorCode == 0 && sy.assignment == [4])
            // The same instance restarting (no member id) replaces the old member: same generation, no rebalance, and
            // the answer names the previous leader id so the restarted leader does not assign again (KIP-345).
            let second = try await c.call(s, version: 5, JoinGroupResponse.self)
            #expect(second.errorCode == 0 && second.memberId != first.memberId && second.memberId.hasPrefix("instance-1"))
            #expect(second.generationId == first.generationId && second.leader == first.memberId && second.members.isEmpty)
            let sy2 = try await c.syncGroup("static", generation: second.generationId, member: second.memberId)
            #expect(sy2.errorCode == 0 && sy2.assignment == [4])
            var hb = HeartbeatRequest(groupId: "static", generationId: first.generationId, memberId: first.memberId)
            hb.groupInstanceId = "instance-1"
            let old = try await c.call(hb, version: 3, HeartbeatResponse.self)
            #expect(old.errorCode == KafkaErrorCode.fencedInstanceId.rawValue)
            #expect(try await c.heartbeat("static", generation: second.generationId, member: second.memberId) == 0)
            // LeaveGroup v3 by instance id alone.
            var leave = LeaveGroupRequest()
            leave.groupId = "static"
            leave.members = [.init(memberId: "", groupInstanceId: "instance-1")]
            let lr = try await c.call(leave, version: 3, LeaveGroupResponse.self)
            #expect(lr.members.map(\.errorCode) == [0])
            await c.close()
        }
    }

    @Test("a static member restarting in a Stable two-member group keeps its assignment, the other member sees no rebalance, the old id is fenced; a protocol change rebalances")
    func staticMemberRestartWithoutRebalance() async throws {
        try await withBroker({ $0.groups.initialRebalanceDelayMs = 300 }) { b in
            let ca = try await b.connect(), cb = try await b.connect()
            func staticJoin(_ c: TestClient, _ inst: String, member: String = "",
                            protocols: [(String, [UInt8])] = [("range", [1]), ("roundrobin", [2])]) async throws -> JoinGroupResponse {
                var r = joinRequest("sg", member: member, protocols: protocols)
                r.groupInstanceId = inst
                return try await c.call(r, version: 5, JoinGroupResponse.self)
            }
            async let ja = staticJoin(ca, "a")
            async let jb = staticJoin(cb, "b")
            let (ra, rb) = try await (ja, jb)
            #expect(ra.errorCode == 0 && rb.errorCode == 0 && ra.generationId == rb.generationId && ra.protocolName == "range")
            let (leaderC, leader, followerC, follower) = ra.leader == ra.memberId ? (ca, ra, cb, rb) : (cb, rb, ca, ra)
            async let fs = followerC.syncGroup("sg", generation: follower.generationId, member: follower.memberId)
            try await Task.sleep(nanoseconds: 50_000_000)
            let assignments: [(String, [UInt8])] = [(ra.memberId, [0xA]), (rb.memberId, [0xB])]
            let ls = try await leaderC.syncGroup("sg", generation: leader.generationId, member: leader.memberId, assignments: assignments)
            let fsr = try await fs
            #expect(ls.errorCode == 0 && fsr.errorCode == 0)

            // "b" restarts (a new process: no member id, same instance id).
            let cb2 = try await b.connect()
            let rb2 = try await staticJoin(cb2, "b")
            #expect(rb2.errorCode == 0 && rb2.memberId != rb.memberId)
            #expect(rb2.generationId == rb.generationId && rb2.leader == ra.leader && rb2.members.isEmpty)
            let sb2 = try await cb2.syncGroup("sg", generation: rb2.generationId, member: rb2.memberId)
            #expect(sb2.errorCode == 0 && sb2.assignment == [0xB])
            // "a" is not disturbed: its generation is still current, no REBALANCE_IN_PROGRESS.
            #expect(try await ca.heartbeat("sg", generation: ra.generationId, member: ra.memberId) == 0)
            #expect(try await cb2.heartbeat("sg", generation: rb2.generationId, member: rb2.memberId) == 0)
            // The old "b" is a zombie: fenced on heartbeat, join and commit, so it cannot fence the new one in turn.
            var hb = HeartbeatRequest(groupId: "sg", generationId: rb.generationId, memberId: rb.memberId)
            hb.groupInstanceId = "b"
            #expect(try await cb.call(hb, version: 3, HeartbeatResponse.self).errorCode == KafkaErrorCode.fencedInstanceId.rawValue)
            #expect(try await staticJoin(cb, "b", member: rb.memberId).errorCode == KafkaErrorCode.fencedInstanceId.rawValue)
            var oc = OffsetCommitRequest()
            oc.groupId = "sg"
            oc.generationIdOrMemberEpoch = rb.generationId
            oc.memberId = rb.memberId
            oc.groupInstanceId = "b"
            oc.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, committedOffset: 5, committedLeaderEpoch: -1, committedMetadata: nil)])]
            let ocr = try await cb.call(oc, version: 8, OffsetCommitResponse.self)
            #expect(ocr.topics.first?.partitions.first?.errorCode == KafkaErrorCode.fencedInstanceId.rawValue)

            // A restart whose protocols change the group's selection ("range" → "roundrobin") does rebalance.
            let cb3 = try await b.connect()
            async let rb3 = staticJoin(cb3, "b", protocols: [("roundrobin", [3])])
            var hbCode: Int16 = 0
            for _ in 0..<60 where hbCode == 0 {   // until the join has arrived (bounded: 3 s)
                try await Task.sleep(nanoseconds: 50_000_000)
                hbCode = try await ca.heartbeat("sg", generation: ra.generationId, member: ra.memberId)
            }
            #expect(hbCode == KafkaErrorCode.rebalanceInProgress.rawValue)
            let ra3 = try await staticJoin(ca, "a", member: ra.memberId)
            let r3 = try await rb3
            #expect(ra3.errorCode == 0 && r3.errorCode == 0 && ra3.generationId == ra.generationId + 1 && ra3.protocolName == "roundrobin")
            await ca.close(); await cb.close(); await cb2.close(); await cb3.close()
        }
    }
}
