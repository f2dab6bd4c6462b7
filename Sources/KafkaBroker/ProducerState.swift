import KafkaProtocol

/// Idempotent-producer bookkeeping of one partition: per producer id, its epoch and its last five batches
/// (Kafka's duplicate window). Rebuilt at startup from the tail of the log, so it survives a restart.
struct ProducerStateTable: Sendable {
    static let window = 5

    struct Batch: Sendable {
        var firstSeq: Int32
        var lastSeq: Int32
        var baseOffset: Int64
    }

    struct Producer: Sendable {
        var epoch: Int16
        var batches: [Batch] = []
    }

    enum Verdict: Equatable {
        case accept
        case duplicate(baseOffset: Int64)
        case reject(KafkaErrorCode)
    }

    private(set) var producers: [Int64: Producer] = [:]
    /// Bound on producers tracked per partition; the least recently written is dropped beyond it.
    var maxProducers = 10_000
    private var lastTouch: [Int64: UInt64] = [:]
    private var clock: UInt64 = 0

    func check(producerId: Int64, epoch: Int16, firstSeq: Int32, lastSeq: Int32) -> Verdict {
        guard producerId >= 0 else { return .accept }
        guard let p = producers[producerId] else { return .accept }
        if epoch < p.epoch { return .reject(.invalidProducerEpoch) }
        if epoch > p.epoch { return firstSeq == 0 ? .accept : .reject(.outOfOrderSequenceNumber) }
        if let dup = p.batches.first(where: { $0.firstSeq == firstSeq && $0.lastSeq == lastSeq }) {
            return .duplicate(baseOffset: dup.baseOffset)
        }
        guard let last = p.batches.last else { return .accept }
        let expected = last.lastSeq == Int32.max ? 0 : last.lastSeq + 1
        return firstSeq == expected ? .accept : .reject(.outOfOrderSequenceNumber)
    }

    mutating func record(producerId: Int64, epoch: Int16, firstSeq: Int32, lastSeq: Int32, baseOffset: Int64) {
        guard producerId >= 0 else { return }
        var p = producers[producerId] ?? Producer(epoch: epoch)
        if epoch != p.epoch {
            p = Producer(epoch: epoch)
        }
        p.batches.append(Batch(firstSeq: firstSeq, lastSeq: lastSeq, baseOffset: baseOffset))
        if p.batches.count > Self.window { p.batches.removeFirst(p.batches.count - Self.window) }
        producers[producerId] = p
        clock += 1
        lastTouch[producerId] = clock
        if producers.count > maxProducers, let oldest = lastTouch.min(by: { $0.value < $1.value })?.key {
            producers[oldest] = nil
            lastTouch[oldest] = nil
        }
    }

    /// Forgets a batch whose append failed, so that the producer's retry is not taken for a duplicate.
    mutating func forget(producerId: Int64, firstSeq: Int32, baseOffset: Int64) {
        guard var p = producers[producerId] else { return }
        p.batches.removeAll { $0.firstSeq == firstSeq && $0.baseOffset == baseOffset }
        producers[producerId] = p
    }
}
