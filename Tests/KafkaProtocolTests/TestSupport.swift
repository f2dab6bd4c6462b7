import KafkaProtocol
import WoodpeckerCore

/// Bytes from a hex string; spaces and newlines are ignored.
func hexBytes(_ s: String) -> [UInt8] {
    let digits = Array(s.utf8.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") })
    precondition(digits.count % 2 == 0, "odd hex length")
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: preconditionFailure("bad hex digit")
        }
    }
    return stride(from: 0, to: digits.count, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
}

/// Every generated codec: the 22 APIs' requests and responses plus the two headers.
let allCodecTypes: [any KafkaCodable.Type] =
    ApiKey.allCases.compactMap(\.codec).flatMap { [$0.request as any KafkaCodable.Type, $0.response] }
    + [RequestHeader.self, ResponseHeader.self]

struct RoundTrip<T> {
    var bytes: [UInt8]
    var decoded: T
    var consumedAll: Bool
    var reencodedSame: Bool
}

/// Encodes at `version`, decodes, and re-encodes.
func roundTrip<T: KafkaCodable>(_ value: T, version: Int16) throws -> RoundTrip<T> {
    let bytes = value.encoded(version: version)
    var reader = bytes
    let decoded = try T(from: &reader, version: version)
    let again = decoded.encoded(version: version)
    return RoundTrip(bytes: bytes.readableBytesArray, decoded: decoded, consumedAll: reader.readableBytes == 0,
                     reencodedSame: again == bytes)
}

/// Decodes every strict prefix of `bytes`; returns the prefix lengths that did NOT throw.
func prefixesThatDecode<T: KafkaCodable>(_ type: T.Type, _ bytes: [UInt8], version: Int16) -> [Int] {
    var ok: [Int] = []
    for n in 0..<bytes.count {
        var b = ByteBuffer(bytes: bytes[0..<n])
        if (try? T(from: &b, version: version)) != nil { ok.append(n) }
    }
    return ok
}

/// A deterministic generator for fuzz inputs (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
