/// The error every Woodpecker layer throws for operating failures (disk full, S3 503, fenced writer ...).
/// Programmer errors are `precondition`s instead.
///
/// `isRetryable` tells the caller whether the same operation may succeed if tried again later
/// (a timeout, a 503, etcd briefly away); non-retryable errors need a change first (reopen a writer, fix a path).
public struct WoodpeckerError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: Int, Sendable {
        // client and log lifecycle
        case clientClosed = 1002
        case logNotFound = 1101
        case logAlreadyExists = 1102
        case segmentClosed = 1200
        case segmentRolling = 1201
        case segmentStateInvalid = 1202
        case lockLost = 1405
        case readerClosed = 1504
        case invalidArgument = 1600
        case bufferFull = 2200
        case timeout = 2300
        case endOfSegment = 2310
        // storage
        case objectNotFound = 8101
        case entryNotFound = 8102
        case storageNotWritable = 8103
        case segmentFenced = 8104
        case segmentNotFound = 8105
        case objectAlreadyExists = 8106
        case corrupted = 8110
        case ioFailure = 8120
        case diskFull = 8121
        // QuorumBuffer LogStore nodes
        case nodeUnavailable = 8130
        case unsupportedVersion = 8131
        // metadata
        case revisionConflict = 3011
        case keyNotFound = 3012
        case metadataUnavailable = 3020
        case metadataCorrupted = 3021
        case internalError = 9000
    }

    public var code: Code
    public var message: String
    public var isRetryable: Bool

    public init(_ code: Code, _ message: String, retryable: Bool? = nil) {
        self.code = code
        self.message = message
        self.isRetryable = retryable ?? Self.defaultRetryable(code)
    }

    static func defaultRetryable(_ code: Code) -> Bool {
        switch code {
        case .segmentClosed, .segmentRolling, .bufferFull, .timeout, .entryNotFound, .metadataUnavailable, .diskFull,
             .nodeUnavailable:
            true
        default:
            false
        }
    }

    public var description: String {
        "\(code) (\(code.rawValue))\(isRetryable ? " [retryable]" : ""): \(message)"
    }
}

/// Turns an errno into a WoodpeckerError naming the operation and path.
public func ioError(_ op: String, path: String, errno e: Int32) -> WoodpeckerError {
    let text = String(cString: strerror(e))
    if e == ENOSPC || e == EDQUOT {
        return WoodpeckerError(.diskFull, "\(op) \(path): \(text); free disk space and retry")
    }
    return WoodpeckerError(.ioFailure, "\(op) \(path): \(text)", retryable: e == EINTR || e == EAGAIN || e == EIO)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
