import Foundation
import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata

/// Settings of the classic consumer-group coordinator.
public struct GroupCoordinatorConfig: Sendable {
    /// How long the first rebalance of an empty group waits for more members before completing (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3000 there; short here so a lone consumer starts quickly).
    public var initialRebalanceDelayMs: UInt64 = 100
    /// Accepted JoinGroup session timeouts; outside → INVALID_SESSION_TIMEOUT (26).
    public var minSessionTimeoutMs: Int32 = 1_000
    public var maxSessionTimeoutMs: Int32 = 1_800_000
    /// Members per group; one more → GROUP_MAX_SIZE_REACHED (81).
    public var maxGroupSize = 1_000
    /// Groups with members held in memory; a JoinGroup creating one more → COORDINATOR_NOT_AVAILABLE (15).
    public var maxGroups = 10_000
    /// Longest committed offset metadata string; longer → OFFSET_METADATA_TOO_LARGE (12).
    public var maxOffsetMetadataBytes = 4_096
    /// Largest protocol metadata a member may join with (all its protocols), and largest assignment a leader may
    /// hand out (all members); larger → INVALID_REQUEST (42), the group left as it was. The coordinator keeps
    /// both in memory for every member.
    public var maxMemberMetadataBytes = 1 << 20
    /// How often session timeouts and rebalance deadlines are checked.
    public var tickMs: UInt64 = 50

    public init() {}
}

/// A committed offset as stored (JSON) under `<prefix>kafka/groups/<group>/offsets/<topic>/<partition>`.
struct CommittedOffset: Codable, Sendable, Equatable {
    var offset: Int64
    var leaderEpoch: Int32
    var metadata: String?
    var commitTimestamp: Int64
}

/// Classic (pre-KIP-848) group coordinator: membership, generations and rebalances in memory; committed offsets
/// durable in the metadata store. Every join/sync wait is bounded (rebalance timeout, session timeout) and every
/// waiter is answered exactly once (also on `shutdown`). State lives on the broker loop.
///
/// States: Empty → PreparingRebalance → CompletingRebalance → Stable. The leader is the first member that joined;
/// assignment happens in the leader client and SyncGroup relays its bytes untouched.
actor GroupCoordinator {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    let metadata: any MetadataStore
    /// `<metadataPrefix>kafka/`
    let prefix: String
    let config: GroupCoordinatorConfig
    private var groups: [String: Group] = [:]
    private var ticker: Task<Void, Never>?
    private var closed = false
    private var nextMemberSeq: UInt64 = 0

    enum State: String { case empty = "Empty", preparingRebalance = "PreparingRebalance",
                         completingRebalance = "CompletingRebalance", stable = "Stable" }

    struct JoinResult: Sendable {
        var error: KafkaErrorCode?
        var generation: Int32 = -1
        var protocolType: String?
        var protocolName: String?
        var leader = ""
        var memberId = ""
        var members: [(id: String, instanceId: String?, metadata: [UInt8])] = []
    }

    struct SyncResult: Sendable {
        var error: KafkaErrorCode?
        var assignment: [UInt8] = []
        var protocolType: String?
        var protocolName: String?
    }

    final class Member {
        let id: String
        var instanceId: String?
        var clientId: String
        var clientHost: String
        var sessionTimeoutMs: Int32
        var rebalanceTimeoutMs: Int32
        var protocolType: String
        var protocols: [(name: String, metadata: [UInt8])]
        var assignment: [UInt8] = []
        var lastHeartbeatMs: UInt64
        let seq: UInt64
        var joinWaiter: CheckedContinuation<JoinResult, Never>?
        var syncWaiter: CheckedContinuation<SyncResult, Never>?

        init(id: String, seq: UInt64, instanceId: String?, clientId: String, clientHost: String, sessionTimeoutMs: Int32,
             rebalanceTimeoutMs: Int32, protocolType: String, protocols: [(name: String, metadata: [UInt8])], now: UInt64) {
            self.id = id
            self.seq = seq
            self.instanceId = instanceId
            self.clientId = clientId
            self.clientHost = clientHost
            self.sessionTimeoutMs = sessionTimeoutMs
            self.rebalanceTimeoutMs = rebalanceTimeoutMs
            self.protocolType = protocolType
            self.protocols = protocols
            self.lastHeartbeatMs = now
        }

        func metadata(for proto: String?) -> [UInt8] { protocols.first { $0.name == proto }?.metadata ?? [] }
    }

    final class Group {
        let id: String
        var state: State = .empty
        var generation: Int32 = 0
        var protocolType: String?
        var protocolName: String?
        var leader: String?
        var members: [String: Member] = [:]
        /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire if the client never rejoins.
        var pending: [String: UInt64] = [:]
        var staticMembers: [String: String] = [:]
        /// PreparingRebalance: completes at this time even if members are missing (they are removed).
        var rebalanceDeadlineMs: UInt64 = 0
        /// PreparingRebalance: not before this time (initial rebalance delay of an empty group).
        var notBeforeMs: UInt64 = 0
        /// CompletingRebalance: the leader's SyncGroup must arrive before this, else the group rebalances again.
        var syncDeadlineMs: UInt64 = 0

        init(id: String) { self.id = id }

        var orderedMembers: [Member] { members.values.sorted { $0.seq < $1.seq } }
    }

    init(loop: EventLoop, metadata: any MetadataStore, prefix: String, config: GroupCoordinatorConfig) {
        self.loop = loop
        self.metadata = metadata
        self.prefix = prefix
        self.config = config
    }

    /// Starts the timer that expires sessions and ends rebalances.
    func start() {
        guard ticker == nil else { return }
        let tick = config.tickMs
        ticker = Task(executorPreference: loop) { [weak self, loop] in
            while !Task.isCancelled {
                await loop.sleep(ms: tick)
                guard let self, !Task.isCancelled else { return }
                await self.tick()
            }
        }
    }

    /// Answers every waiting JoinGroup/SyncGroup with COORDINATOR_NOT_AVAILABLE and refuses new ones.
    func shutdown() {
        closed = true
        ticker?.cancel()
        ticker = nil
        for g in groups.values {
            for m in g.members.values {
                m.joinWaiter?.resume(returning: JoinResult(error: .coordinatorNotAvailable, memberId: m.id))
                m.joinWaiter = nil
                m.syncWaiter?.resume(returning: SyncResult(error: .coordinatorNotAvailable))
                m.syncWaiter = nil
            }
        }
        groups.removeAll()
    }

    private func now() -> UInt64 { Clock.monotonicMillis() }

    // MARK: JoinGroup

    struct JoinParams: Sendable {
        var groupId: String
        var memberId: String
        var instanceId: String?
        var sessionTimeoutMs: Int32
        var rebalanceTimeoutMs: Int32
        var protocolType: String
        var protocols: [(name: String, metadata: [UInt8])]
        var clientId: String
        var clientHost: String
        /// v4+: a first join without member id gets MEMBER_ID_REQUIRED.
        var requireKnownMemberId: Bool
    }

    func join(_ p: JoinParams) async -> JoinResult {
        if closed { return JoinResult(error: .coordinatorNotAvailable, memberId: p.memberId) }
        guard !p.groupId.isEmpty else { return JoinResult(error: .invalidGroupId, memberId: p.memberId) }
        guard p.sessionTimeoutMs >= config.minSessionTimeoutMs, p.sessionTimeoutMs <= config.maxSessionTimeoutMs else {
            return JoinResult(error: .invalidSessionTimeout, memberId: p.memberId)
        }
        guard !p.protocolType.isEmpty, !p.protocols.isEmpty else {
            return JoinResult(error: .inconsistentGroupProtocol, memberId: p.memberId)
        }
        let existing = groups[p.groupId]
        if existing == nil {
            if !p.memberId.isEmpty { return JoinResult(error: .unknownMemberId, memberId: p.memberId) }
            if groups.count >= config.maxGroups { return JoinResult(error: .coordinatorNotAvailable, memberId: p.memberId) }
        }
        let g = existing ?? Group(id: p.groupId)
        groups[p.groupId] = g
        let now = now()
        // Every member must share the protocol type and at least one protocol with the group.
        if !g.members.isEmpty {
            let others = g.members.values.filter { $0.id != p.memberId }
            if !others.isEmpty {
                if g.protocolType != p.protocolType { return JoinResult(error: .inconsistentGroupProtocol, memberId: p.memberId) }
                var common = Set(others[0].protocols.map(\.name))
                for m in others.dropFirst() { common.formIntersection(m.protocols.map(\.name)) }
                if common.isDisjoint(with: p.protocols.map(\.name)) {
                    return JoinResult(error: .inconsistentGroupProtocol, memberId: p.memberId)
                }
            }
        }

        var memberId = p.memberId
        if memberId.isEmpty {
            if let inst = p.instanceId, let old = g.staticMembers[inst], let oldMember = g.members[old] {
                // Static member restarting: the new id replaces the old one (the old id is fenced). In a Stable group
                // whose protocol would not change, that is all (KIP-345): no rebalance, the member keeps its assignment.
                if let r = replaceStaticMember(g, oldMember, p) { return r }
                removeMember(g, oldMember, error: .fencedInstanceId, rebalance: false)
            }
            nextMemberSeq += 1
            memberId = "\(p.instanceId ?? p.clientId)-\(UUID().uuidString.lowercased())"
            if p.requireKnownMemberId && p.instanceId == nil {
                if g.members.count + g.pending.count >= config.maxGroupSize {
                    return JoinResult(error: .groupMaxSizeReached, memberId: "")
                }
                g.pending[memberId] = now + UInt64(p.sessionTimeoutMs)
                return JoinResult(error: .memberIdRequired, memberId: memberId)
            }
        } else {
            if isFenced(g, p.instanceId, memberId) { return JoinResult(error: .fencedInstanceId, memberId: memberId) }
            if g.members[memberId] == nil && g.pending[memberId] == nil {
                return JoinResult(error: .unknownMemberId, memberId: memberId)
            }
        }

        let member: Member
        if let m = g.members[memberId] {
            member = m
            m.protocols = p.protocols
            m.sessionTimeoutMs = p.sessionTimeoutMs
            m.rebalanceTimeoutMs = p.rebalanceTimeoutMs
            m.clientId = p.clientId
            m.clientHost = p.clientHost
            m.lastHeartbeatMs = now
        } else {
            if g.members.count >= config.maxGroupSize { return JoinResult(error: .groupMaxSizeReached, memberId: memberId) }
            g.pending[memberId] = nil
            nextMemberSeq += 1
            member = Member(id: memberId, seq: nextMemberSeq, instanceId: p.instanceId, clientId: p.clientId,
                            clientHost: p.clientHost, sessionTimeoutMs: p.sessionTimeoutMs,
                            rebalanceTimeoutMs: p.rebalanceTimeoutMs, protocolType: p.protocolType,
                            protocols: p.protocols, now: now)
            g.members[memberId] = member
            if let inst = p.instanceId { g.staticMembers[inst] = memberId }
        }
        if g.members.count == 1 { g.protocolType = p.protocolType }
        if g.state != .preparingRebalance { prepareRebalance(g) }
        if let old = member.joinWaiter {
            member.joinWaiter = nil
            old.resume(returning: JoinResult(error: .rebalanceInProgress, memberId: memberId))
        }
        return await withCheckedContinuation { c in
            member.joinWaiter = c
            checkJoinComplete(g)
        }
    }

    /// A known static member rejoining without a member id while the group is Stable: if the protocol the group
    /// would select with the member's (possibly new) protocols is the current one, the member gets a new id, keeps
    /// its assignment and the generation stays; the old id is fenced. The answer names the previous leader id, so
    /// a restarted leader acts as a follower and does not compute an assignment a Stable group would not relay
    /// (what Kafka does). nil = the caller must rebalance instead.
    private func replaceStaticMember(_ g: Group, _ old: Member, _ p: JoinParams) -> JoinResult? {
        guard g.state == .stable, let inst = p.instanceId, p.protocolType == g.protocolType,
              let current = g.protocolName, let previousLeader = g.leader else { return nil }
        let newId = "\(inst)-\(UUID().uuidString.lowercased())"
        let m = Member(id: newId, seq: old.seq, instanceId: inst, clientId: p.clientId, clientHost: p.clientHost,
                       sessionTimeoutMs: p.sessionTimeoutMs, rebalanceTimeoutMs: p.rebalanceTimeoutMs,
                       protocolType: p.protocolType, protocols: p.protocols, now: now())
        let next = g.members.values.filter { $0.id != old.id } + [m]
        guard selectProtocol(next.sorted { $0.seq < $1.seq }) == current else { return nil }
        m.assignment = old.assignment
        if let w = old.joinWaiter { old.joinWaiter = nil; w.resume(returning: JoinResult(error: .fencedInstanceId, memberId: old.id)) }
        if let w = old.syncWaiter { old.syncWaiter = nil; w.resume(returning: SyncResult(error: .fencedInstanceId)) }
        g.members[old.id] = nil
        g.members[newId] = m
        g.staticMembers[inst] = newId
        if g.leader == old.id { g.leader = newId }
        Diagnostics.info("group \(g.id): static member \(inst) rejoined as \(newId) (was \(old.id)); no rebalance")
        return JoinResult(error: nil, generation: g.generation, protocolType: g.protocolType, protocolName: current,
                          leader: previousLeader, memberId: newId)
    }

    private func prepareRebalance(_ g: Group) {
        let now = now()
        let wasEmpty = g.state == .empty
        g.state = .preparingRebalance
        for m in g.members.values {
            if let s = m.syncWaiter {
                m.syncWaiter = nil
                s.resume(returning: SyncResult(error: .rebalanceInProgress))
            }
        }
        let timeout = g.members.values.map { UInt64(max($0.rebalanceTimeoutMs, 0)) }.max() ?? 0
        g.rebalanceDeadlineMs = now + timeout
        g.notBeforeMs = wasEmpty ? now + config.initialRebalanceDelayMs : 0
    }

    private func checkJoinComplete(_ g: Group) {
        guard g.state == .preparingRebalance else { return }
        let now = now()
        if now < g.notBeforeMs { return }
        let allJoined = g.members.values.allSatisfy { $0.joinWaiter != nil } && g.pending.isEmpty
        if allJoined || now >= g.rebalanceDeadlineMs { completeJoin(g) }
    }

    private func completeJoin(_ g: Group) {
        // Members that did not rejoin in time are removed; so are ids that never came back after MEMBER_ID_REQUIRED.
        g.pending.removeAll()
        for m in g.members.values where m.joinWaiter == nil { removeMember(g, m, error: .unknownMemberId, rebalance: false) }
        g.generation += 1
        if g.members.isEmpty {
            g.state = .empty
            g.protocolName = nil
            g.protocolType = nil
            g.leader = nil
            return
        }
        let ordered = g.orderedMembers
        g.protocolName = selectProtocol(ordered)
        if g.protocolName == nil {
            // Cannot happen after the join-time check, but never leave waiters hanging.
            for m in ordered { m.joinWaiter?.resume(returning: JoinResult(error: .inconsistentGroupProtocol, memberId: m.id)); m.joinWaiter = nil }
            g.members.removeAll()
            g.staticMembers.removeAll()
            g.state = .empty
            return
        }
        if g.leader == nil || g.members[g.leader!] == nil { g.leader = ordered[0].id }
        g.state = .completingRebalance
        let now = now()
        g.syncDeadlineMs = now + (ordered.map { UInt64(max($0.rebalanceTimeoutMs, 0)) }.max() ?? 0)
        let all = ordered.map { (id: $0.id, instanceId: $0.instanceId, metadata: $0.metadata(for: g.protocolName)) }
        for m in ordered {
            m.lastHeartbeatMs = now
            m.assignment = []
            var r = JoinResult(error: nil, generation: g.generation, protocolType: g.protocolType,
                               protocolName: g.protocolName, leader: g.leader!, memberId: m.id)
            if m.id == g.leader { r.members = all }
            let w = m.joinWaiter
            m.joinWaiter = nil
            w?.resume(returning: r)
        }
    }

    /// A protocol every member supports, chosen by each member's first preference among those (ties: the
    /// earliest member's order).
    private func selectProtocol(_ members: [Member]) -> String? {
        guard var common = members.first.map({ Set($0.protocols.map(\.name)) }) else { return nil }
        for m in members.dropFirst() { common.formIntersection(m.protocols.map(\.name)) }
        guard !common.isEmpty else { return nil }
        var votes: [String: Int] = [:]
        for m in members { if let v = m.protocols.first(where: { common.contains($0.name) }) { votes[v.name, default: 0] += 1 } }
        let best = votes.values.max() ?? 0
        return members[0].protocols.first { common.contains($0.name) && votes[$0.name, default: 0] == best }?.name
    }

    /// Removes a member, answering its waiters with `error`. With `rebalance`, a group that had settled rebalances.
    private func removeMember(_ g: Group, _ m: Member, error: KafkaErrorCode, rebalance: Bool) {
        g.members[m.id] = nil
        if let inst = m.instanceId, g.staticMembers[inst] == m.id { g.staticMembers[inst] = nil }
        if let w = m.joinWaiter { m.joinWaiter = nil; w.resume(returning: JoinResult(error: error, memberId: m.id)) }
        if let w = m.syncWaiter { m.syncWaiter = nil; w.resume(returning: SyncResult(error: error)) }
        if g.leader == m.id { g.leader = nil }
        guard rebalance else { return }
        switch g.state {
        case .stable, .completingRebalance:
            prepareRebalance(g)
            checkJoinComplete(g)
        case .preparingRebalance:
            checkJoinComplete(g)
        case .empty: break
        }
    }

    // MARK: SyncGroup, Heartbeat, LeaveGroup

    /// A request naming a static instance that now belongs to another member id: that caller is a zombie of the
    /// instance (replaced by a restart) and must stop rather than rejoin and fence the live one in turn.
    private func isFenced(_ g: Group, _ instanceId: String?, _ memberId: String) -> Bool {
        guard let inst = instanceId, let cur = g.staticMembers[inst] else { return false }
        return cur != memberId
    }

    func sync(groupId: String, generation: Int32, memberId: String, instanceId: String?, protocolType: String?,
              protocolName: String?, assignments: [(String, [UInt8])]) async -> SyncResult {
        if closed { return SyncResult(error: .coordinatorNotAvailable) }
        if let g = groups[groupId], isFenced(g, instanceId, memberId) { return SyncResult(error: .fencedInstanceId) }
        guard let g = groups[groupId], let m = g.members[memberId] else { return SyncResult(error: .unknownMemberId) }
        if let inst = instanceId, g.staticMembers[inst] != memberId { return SyncResult(error: .fencedInstanceId) }
        guard generation == g.generation else { return SyncResult(error: .illegalGeneration) }
        if let t = protocolType, t != g.protocolType { return SyncResult(error: .inconsistentGroupProtocol) }
        if let n = protocolName, n != g.protocolName { return SyncResult(error: .inconsistentGroupProtocol) }
        m.lastHeartbeatMs = now()
        switch g.state {
        case .empty: return SyncResult(error: .unknownMemberId)
        case .preparingRebalance: return SyncResult(error: .rebalanceInProgress)
        case .stable:
            return SyncResult(error: nil, assignment: m.assignment, protocolType: g.protocolType, protocolName: g.protocolName)
        case .completingRebalance:
            if memberId == g.leader {
                let byMember = Dictionary(assignments, uniquingKeysWith: { a, _ in a })
                g.state = .stable
                for o in g.members.values {
                    o.assignment = byMember[o.id] ?? []
                    if let w = o.syncWaiter {
                        o.syncWaiter = nil
                        w.resume(returning: SyncResult(error: nil, assignment: o.assignment, protocolType: g.protocolType,
                                                       protocolName: g.protocolName))
                    }
                }
                return SyncResult(error: nil, assignment: m.assignment, protocolType: g.protocolType, protocolName: g.protocolName)
            }
            if let old = m.syncWaiter {
                m.syncWaiter = nil
                old.resume(returning: SyncResult(error: .rebalanceInProgress))
            }
            return await withCheckedContinuation { m.syncWaiter = $0 }
        }
    }

    func heartbeat(groupId: String, generation: Int32, memberId: String, instanceId: String?) -> KafkaErrorCode? {
        if closed { return .coordinatorNotAvailable }
        if let g = groups[groupId], isFenced(g, instanceId, memberId) { return .fencedInstanceId }
        guard let g = groups[groupId], let m = g.members[memberId] else { return .unknownMemberId }
        if let inst = instanceId, g.staticMembers[inst] != memberId { return .fencedInstanceId }
        switch g.state {
        case .empty: return .unknownMemberId
        case .preparingRebalance:
            m.lastHeartbeatMs = now()
            return .rebalanceInProgress
        case .completingRebalance, .stable:
            guard generation == g.generation else { return .illegalGeneration }
            m.lastHeartbeatMs = now()
            return nil
        }
    }

    /// Removes each (memberId, instanceId); a member named only by instance id is looked up. Returns one error per
    /// entry (nil = left).
    func leave(groupId: String, members: [(memberId: String, instanceId: String?)]) -> [KafkaErrorCode?] {
        guard let g = groups[groupId] else { return members.map { _ in .unknownMemberId } }
        var out: [KafkaErrorCode?] = []
        for (mid, inst) in members {
            var id = mid
            if let inst {
                guard let cur = g.staticMembers[inst] else { out.append(.unknownMemberId); continue }
                if !id.isEmpty && id != cur { out.append(.fencedInstanceId); continue }
                id = cur
            }
            guard let m = g.members[id] else {
                if g.pending.removeValue(forKey: id) != nil { checkJoinComplete(g); out.append(nil) } else { out.append(.unknownMemberId) }
                continue
            }
            removeMember(g, m, error: .unknownMemberId, rebalance: true)
            out.append(nil)
        }
        if g.members.isEmpty && g.state == .preparingRebalance { completeJoin(g) }
        return out
    }

    /// Expires members whose session timed out and ends rebalances whose deadline passed.
    func tick() {
        let now = now()
        for g in groups.values {
            for (id, deadline) in g.pending where deadline <= now { g.pending[id] = nil }
            for m in g.members.values where m.joinWaiter == nil && m.syncWaiter == nil
                && now > m.lastHeartbeatMs + UInt64(max(m.sessionTimeoutMs, 0)) {
                Diagnostics.info("group \(g.id): member \(m.id) session expired after \(m.sessionTimeoutMs) ms")
                removeMember(g, m, error: .unknownMemberId, rebalance: true)
            }
            switch g.state {
            case .preparingRebalance: checkJoinComplete(g)
            case .completingRebalance where now >= g.syncDeadlineMs:
                Diagnostics.info("group \(g.id): leader \(g.leader ?? "-") sent no SyncGroup in time; rebalancing")
                prepareRebalance(g)
                checkJoinComplete(g)
            default: break
            }
            if g.members.isEmpty && g.pending.isEmpty && g.state == .empty { groups[g.id] = nil }
        }
    }

    // MARK: inspection (ListGroups / DescribeGroups / DeleteGroups)

    struct GroupSummary: Sendable {
        var groupId: String
        var state: String
        var protocolType: String
        var protocolName: String
        var members: [(id: String, instanceId: String?, clientId: String, clientHost: String, metadata: [UInt8], assignment: [UInt8])]
    }

    func summary(_ groupId: String) -> GroupSummary? {
        guard let g = groups[groupId] else { return nil }
        return GroupSummary(groupId: g.id, state: g.state.rawValue, protocolType: g.protocolType ?? "",
                            protocolName: g.state == .stable ? (g.protocolName ?? "") : "",
                            members: g.orderedMembers.map {
                                ($0.id, $0.instanceId, $0.clientId, $0.clientHost, $0.metadata(for: g.protocolName), $0.assignment)
                            })
    }

    func activeGroups() -> [GroupSummary] { groups.keys.sorted().compactMap { summary($0) } }

    /// Topics the members of a "consumer" group subscribe to (from their consumer-protocol metadata).
    func subscribedTopics(_ groupId: String) -> Set<String> {
        guard let g = groups[groupId], g.protocolType == "consumer" else { return [] }
        var out = Set<String>()
        for m in g.members.values { out.formUnion(Self.consumerSubscription(m.metadata(for: g.protocolName))) }
        return out
    }

    /// Topic names of a ConsumerProtocolSubscription (version int16, then topics[string]; all versions start so).
    static func consumerSubscription(_ bytes: [UInt8]) -> [String] {
        var b = ByteBuffer(bytes: bytes)
        guard (try? b.readInteger(as: Int16.self)) != nil, let n = try? b.readInteger(as: Int32.self), n >= 0, n < 100_000 else { return [] }
        var out: [String] = []
        for _ in 0..<n {
            guard let len = try? b.readInteger(as: Int16.self), len >= 0, let s = try? b.readString(length: Int(len)) else { break }
            out.append(s)
        }
        return out
    }

    func hasMembers(_ groupId: String) -> Bool { !(groups[groupId]?.members.isEmpty ?? true) }

    /// Whether a commit from (generation, memberId) is accepted now; nil = yes.
    func validateCommit(groupId: String, generation: Int32, memberId: String, instanceId: String?) -> KafkaErrorCode? {
        if closed { return .coordinatorNotAvailable }
        guard let g = groups[groupId], !g.members.isEmpty else {
            // No live members: only standalone (generation -1) commits; a member of a forgotten generation rejoins.
            return generation < 0 ? nil : .unknownMemberId
        }
        if generation < 0 && memberId.isEmpty { return .unknownMemberId }
        if isFenced(g, instanceId, memberId) { return .fencedInstanceId }
        guard let m = g.members[memberId] else { return .unknownMemberId }
        if let inst = instanceId, g.staticMembers[inst] != memberId { return .fencedInstanceId }
        if g.state == .completingRebalance { return .rebalanceInProgress }
        guard generation == g.generation else { return .illegalGeneration }
        m.lastHeartbeatMs = now()
        return nil
    }

    func forget(_ groupId: String) -> Bool {
        guard let g = groups[groupId] else { return false }
        if !g.members.isEmpty { return false }
        groups[groupId] = nil
        return true
    }
}
