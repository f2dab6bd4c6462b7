import CCompression
import CSnappy
import WoodpeckerCore

/// Compression codec of a record batch (attributes bits 0-2).
public enum CompressionCodec: Int16, Sendable, CaseIterable {
    case none = 0
    case gzip = 1
    case snappy = 2
    case lz4 = 3
    case zstd = 4
}

/// Why compressing or decompressing failed.
public struct CompressionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The input is not valid data for the codec (maps to CORRUPT_MESSAGE).
        case corrupt
        /// The output would exceed the caller's bound.
        case tooLarge
        /// The codec library failed for another reason (out of memory, internal error).
        case failed
    }

    public var codec: CompressionCodec
    public var kind: Kind
    public var message: String

    public var description: String { "\(codec) \(kind): \(message)" }
}

/// Kafka's compression codecs over Debian's zlib, snappy, lz4 and zstd.
///
/// Decompression always takes a bound on the output size and fails with `.tooLarge` instead of allocating
/// past it, so a small "compression bomb" cannot exhaust memory.
public enum KafkaCompression {
    /// Default bound on the decompressed size of one batch.
    public static let defaultMaxDecompressedBytes = 64 * 1024 * 1024
    /// Output grows in chunks of this size while streaming.
    static let chunkBytes = 64 * 1024
    /// Block size of the xerial snappy framing (snappy-java's default).
    static let xerialBlockBytes = 32 * 1024
    static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]

    /// How snappy output is framed: `.xerial` as the Java client writes it, `.raw` as librdkafka and franz-go do.
    /// Every Kafka client reads both.
    public enum SnappyFraming: Sendable { case xerial, raw }

    public static func compress(_ input: [UInt8], codec: CompressionCodec, snappyFraming: SnappyFraming = .xerial)
        throws(CompressionError) -> [UInt8]
    {
        switch codec {
        case .none: return input
        case .gzip: return try gzipCompress(input)
        case .snappy: return try snappyFraming == .xerial ? xerialCompress(input) : snappyRawCompress(input)
        case .lz4: return try lz4Compress(input)
        case .zstd: return try zstdCompress(input)
        }
    }

    /// Decompresses `input`; throws `.tooLarge` if the output would exceed `maxOutputBytes`.
    /// Snappy input may be raw or xerial-framed (detected by its magic).
    public static func decompress(_ input: ByteBuffer, codec: CompressionCodec,
                                  maxOutputBytes: Int = defaultMaxDecompressedBytes) throws(CompressionError) -> [UInt8]
    {
        let bytes = input.readableBytesArray
        switch codec {
        case .none:
            guard bytes.count <= maxOutputBytes else {
                throw CompressionError(codec: .none, kind: .tooLarge, message: "\(bytes.count) bytes exceed \(maxOutputBytes)")
            }
            return bytes
        case .gzip: return try gzipDecompress(bytes, max: maxOutputBytes)
        case .snappy:
            if bytes.count >= 16 && Array(bytes[0..<8]) == xerialMagic { return try xerialDecompress(bytes, max: maxOutputBytes) }
            return try snappyRawDecompress(bytes[...], max: maxOutputBytes)
        case .lz4: return try lz4Decompress(bytes, max: maxOutputBytes)
        case .zstd: return try zstdDecompress(bytes, max: maxOutputBytes)
        }
    }

    // MARK: gzip (RFC 1952 via zlib)

    static func gzipCompress(_ input: [UInt8]) throws(CompressionError) -> [UInt8] {
        var s = z_stream()
        // windowBits 15 + 16 selects the gzip wrapper.
        guard wp_deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK else {
            throw CompressionError(codec: .gzip, kind: .failed, message: "deflateInit2 failed")
        }
        defer { deflateEnd(&s) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&s, uLong(input.count))) + 32)
        var input = input
        let rc = input.withUnsafeMutableBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { outp in
                s.next_in = inp.baseAddress
                s.avail_in = uInt(inp.count)
                s.next_out = outp.baseAddress
                s.avail_out = uInt(outp.count)
                return deflate(&s, Z_FINISH)
            }
        }
        guard rc == Z_STREAM_END else {
            throw CompressionError(codec: .gzip, kind: .failed, message: "deflate returned \(rc)")
        }
        out.removeSubrange(Int(s.total_out)...)
        return out
    }

    static func gzipDecompress(_ input: [UInt8], max: Int) throws(CompressionError) -> [UInt8] {
        var s = z_stream()
        // windowBits 15 + 32: accept gzip or zlib headers.
        guard wp_inflateInit2(&s, 15 + 32) == Z_OK else {
            throw CompressionError(codec: .gzip, kind: .failed, message: "inflateInit2 failed")
        }
        defer { inflateEnd(&s) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: chunkBytes)
        var input = input
        var failure: CompressionError?
        input.withUnsafeMutableBufferPointer { inp in
            s.next_in = inp.baseAddress
            s.avail_in = uInt(inp.count)
            while true {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { c -> (Int32, Int) in
                    s.next_out = c.baseAddress
                    s.avail_out = uInt(c.count)
                    let rc = inflate(&s, Z_NO_FLUSH)
                    return (rc, c.count - Int(s.avail_out))
                }
                if rc != Z_OK && rc != Z_STREAM_END {
                    let msg = s.msg.map { String(cString: $0) } ?? "inflate returned \(rc)"
                    failure = CompressionError(codec: .gzip, kind: .corrupt, message: msg)
                    return
                }
                if out.count + produced > max {
                    failure = CompressionError(codec: .gzip, kind: .tooLarge, message: "output exceeds \(max) bytes")
                    return
                }
                out.append(contentsOf: chunk[0..<produced])
                if rc == Z_STREAM_END { return }
                if produced == 0 && s.avail_in == 0 {
                    failure = CompressionError(codec: .gzip, kind: .corrupt, message: "gzip stream ends early")
                    return
                }
            }
        }
        if let failure { throw failure }
        return out
    }

    // MARK: snappy (raw and xerial framing)

    static func snappyRawCompress(_ input: ArraySlice<UInt8>) throws(CompressionError) -> [UInt8] {
        var outLen = snappy_max_compressed_length(input.count)
        var out = [UInt8](repeating: 0, count: outLen)
        let st = input.withUnsafeBytes { inp in
            out.withUnsafeMutableBytes { o in
                snappy_compress(inp.baseAddress?.assumingMemoryBound(to: CChar.self), inp.count,
                                o.baseAddress?.assumingMemoryBound(to: CChar.self), &outLen)
            }
        }
        guard st == SNAPPY_OK else { throw CompressionError(codec: .snappy, kind: .failed, message: "snappy_compress: \(st)") }
        out.removeSubrange(outLen...)
        return out
    }

    static func snappyRawCompress(_ input: [UInt8]) throws(CompressionError) -> [UInt8] {
        try snappyRawCompress(input[...])
    }

    static func snappyRawDecompress(_ input: ArraySlice<UInt8>, max: Int) throws(CompressionError) -> [UInt8] {
        var len = 0
        let st = input.withUnsafeBytes { inp in
            snappy_uncompressed_length(inp.baseAddress?.assumingMemoryBound(to: CChar.self), inp.count, &len)
        }
        guard st == SNAPPY_OK else {
            throw CompressionError(codec: .snappy, kind: .corrupt, message: "invalid snappy length header")
        }
        guard len <= max else {
            throw CompressionError(codec: .snappy, kind: .tooLarge, message: "\(len) bytes exceed \(max)")
        }
        var out = [UInt8](repeating: 0, count: len)
        let st2 = input.withUnsafeBytes { inp in
            out.withUnsafeMutableBytes { o in
                snappy_uncompress(inp.baseAddress?.assumingMemoryBound(to: CChar.self), inp.count,
                                  o.baseAddress?.assumingMemoryBound(to: CChar.self), &len)
            }
        }
        guard st2 == SNAPPY_OK, len == out.count else {
            throw CompressionError(codec: .snappy, kind: .corrupt, message: "snappy_uncompress failed (\(st2))")
        }
        return out
    }

    /// snappy-java framing: magic, int32 version 1, int32 compatible version 1, then [int32 length][raw block]...
    static func xerialCompress(_ input: [UInt8]) throws(CompressionError) -> [UInt8] {
        var out = ByteBuffer()
        out.writeBytes(xerialMagic)
        out.writeInteger(Int32(1))
        out.writeInteger(Int32(1))
        var i = 0
        while i < input.count {
            let end = min(input.count, i + xerialBlockBytes)
            let block = try snappyRawCompress(input[i..<end])
            out.writeInteger(Int32(block.count))
            out.writeBytes(block)
            i = end
        }
        return out.readableBytesArray
    }

    static func xerialDecompress(_ input: [UInt8], max: Int) throws(CompressionError) -> [UInt8] {
        var out: [UInt8] = []
        var i = 16  // magic (8) + version (4) + compatible version (4)
        while i < input.count {
            guard i + 4 <= input.count else {
                throw CompressionError(codec: .snappy, kind: .corrupt, message: "xerial block length truncated at \(i)")
            }
            let n = Int(Int32(bitPattern: UInt32(input[i]) << 24 | UInt32(input[i + 1]) << 16
                | UInt32(input[i + 2]) << 8 | UInt32(input[i + 3])))
            i += 4
            guard n >= 0, n <= input.count - i else {
                throw CompressionError(codec: .snappy, kind: .corrupt, message: "xerial block of \(n) bytes exceeds input")
            }
            out += try snappyRawDecompress(input[i..<i + n], max: max - out.count)
            i += n
        }
        return out
    }

    // MARK: lz4 (frame format)

    static func lz4Compress(_ input: [UInt8]) throws(CompressionError) -> [UInt8] {
        var prefs = LZ4F_preferences_t()
        // Independent 64 KiB blocks: the Java client decodes each block on its own.
        prefs.frameInfo.blockMode = LZ4F_blockIndependent
        prefs.frameInfo.blockSizeID = LZ4F_max64KB
        let bound = LZ4F_compressFrameBound(input.count, &prefs)
        var out = [UInt8](repeating: 0, count: bound)
        let n = input.withUnsafeBytes { inp in
            out.withUnsafeMutableBytes { o in
                LZ4F_compressFrame(o.baseAddress, o.count, inp.baseAddress, inp.count, &prefs)
            }
        }
        guard LZ4F_isError(n) == 0 else {
            throw CompressionError(codec: .lz4, kind: .failed, message: String(cString: LZ4F_getErrorName(n)))
        }
        out.removeSubrange(n...)
        return out
    }

    static func lz4Decompress(_ input: [UInt8], max: Int) throws(CompressionError) -> [UInt8] {
        var ctx: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&ctx, UInt32(LZ4F_VERSION))) == 0, let ctx else {
            throw CompressionError(codec: .lz4, kind: .failed, message: "cannot create a decompression context")
        }
        defer { LZ4F_freeDecompressionContext(ctx) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: chunkBytes)
        var pos = 0
        while true {
            var srcSize = input.count - pos
            var dstSize = chunk.count
            let hint = input.withUnsafeBytes { inp in
                chunk.withUnsafeMutableBytes { c in
                    LZ4F_decompress(ctx, c.baseAddress, &dstSize, inp.baseAddress.map { $0 + pos }, &srcSize, nil)
                }
            }
            if LZ4F_isError(hint) != 0 {
                throw CompressionError(codec: .lz4, kind: .corrupt, message: String(cString: LZ4F_getErrorName(hint)))
            }
            pos += srcSize
            guard out.count + dstSize <= max else {
                throw CompressionError(codec: .lz4, kind: .tooLarge, message: "output exceeds \(max) bytes")
            }
            out.append(contentsOf: chunk[0..<dstSize])
            if hint == 0 { return out }  // frame complete
            if pos >= input.count && dstSize == 0 {
                throw CompressionError(codec: .lz4, kind: .corrupt, message: "lz4 frame ends early")
            }
        }
    }

    // MARK: zstd

    static func zstdCompress(_ input: [UInt8]) throws(CompressionError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = input.withUnsafeBytes { inp in
            out.withUnsafeMutableBytes { o in ZSTD_compress(o.baseAddress, o.count, inp.baseAddress, inp.count, 3) }
        }
        guard ZSTD_isError(n) == 0 else {
            throw CompressionError(codec: .zstd, kind: .failed, message: String(cString: ZSTD_getErrorName(n)))
        }
        out.removeSubrange(n...)
        return out
    }

    static func zstdDecompress(_ input: [UInt8], max: Int) throws(CompressionError) -> [UInt8] {
        guard let ds = ZSTD_createDStream() else {
            throw CompressionError(codec: .zstd, kind: .failed, message: "cannot create a decompression stream")
        }
        defer { ZSTD_freeDStream(ds) }
        ZSTD_initDStream(ds)
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: chunkBytes)
        var pos = 0
        var lastRet = 1
        while true {
            let (ret, produced, consumed) = input.withUnsafeBytes { inp in
                chunk.withUnsafeMutableBytes { c -> (Int, Int, Int) in
                    var ib = ZSTD_inBuffer(src: inp.baseAddress, size: inp.count, pos: pos)
                    var ob = ZSTD_outBuffer(dst: c.baseAddress, size: c.count, pos: 0)
                    let r = ZSTD_decompressStream(ds, &ob, &ib)
                    return (r, ob.pos, ib.pos)
                }
            }
            if ZSTD_isError(ret) != 0 {
                throw CompressionError(codec: .zstd, kind: .corrupt, message: String(cString: ZSTD_getErrorName(ret)))
            }
            guard out.count + produced <= max else {
                throw CompressionError(codec: .zstd, kind: .tooLarge, message: "output exceeds \(max) bytes")
            }
            out.append(contentsOf: chunk[0..<produced])
            let progressed = consumed > pos || produced > 0
            pos = consumed
            lastRet = ret
            if pos >= input.count && produced < chunk.count { break }
            if !progressed { break }
        }
        // ret == 0 means the last frame was completely decoded and flushed.
        guard lastRet == 0 else {
            throw CompressionError(codec: .zstd, kind: .corrupt, message: "zstd frame ends early")
        }
        return out
    }
}
