import COpenSSL
import WoodpeckerCore

/// The digests S3 requests need (SigV4's SHA-256 and HMAC-SHA256, batch delete's Content-MD5), on OpenSSL's
/// libcrypto. Pure functions, callable from any thread.
enum S3Crypto {
    static func sha256(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        digest(data, EVP_sha256(), length: 32)
    }

    static func sha256(_ bytes: some Collection<UInt8>) -> [UInt8] {
        Array(bytes).withUnsafeBytes { sha256($0) }
    }

    static func sha256(_ buffer: ByteBuffer) -> [UInt8] {
        buffer.withUnsafeReadableBytes { sha256($0) }
    }

    static func md5(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { digest($0, EVP_md5(), length: 16) }
    }

    static func hmacSHA256(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 0
        let ok = key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                out.withUnsafeMutableBytes { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), m.bindMemory(to: UInt8.self).baseAddress,
                         m.count, o.bindMemory(to: UInt8.self).baseAddress, &outLength) != nil
                }
            }
        }
        precondition(ok && outLength == 32, "OpenSSL HMAC-SHA256 failed")
        return out
    }

    static func hmacSHA256(key: [UInt8], _ message: String) -> [UInt8] {
        hmacSHA256(key: key, Array(message.utf8))
    }

    private static func digest(_ data: UnsafeRawBufferPointer, _ md: OpaquePointer?, length: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        var outLength: UInt32 = 0
        // EVP_Digest reads `count` bytes from `data`; a zero-length input needs a valid (non-nil) pointer.
        let empty: UInt8 = 0
        let ok = withUnsafePointer(to: empty) { emptyPointer in
            out.withUnsafeMutableBytes { o in
                EVP_Digest(data.baseAddress ?? UnsafeRawPointer(emptyPointer), data.count,
                           o.bindMemory(to: UInt8.self).baseAddress, &outLength, md, nil)
            }
        }
        precondition(ok == 1 && Int(outLength) == length, "OpenSSL EVP_Digest failed")
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func base64(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 4 * ((bytes.count + 2) / 3) + 1)
        let n = bytes.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                EVP_EncodeBlock(o.baseAddress, i.baseAddress, Int32(i.count))
            }
        }
        return String(decoding: out[0..<Int(n)], as: UTF8.self)
    }
}
