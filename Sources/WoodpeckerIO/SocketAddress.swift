import CLibUV
import WoodpeckerCore

#if canImport(Glibc)
import Glibc
#endif

/// A resolved IPv4 or IPv6 socket address (a `sockaddr_storage` that is safe to pass between threads).
public struct SocketAddress: @unchecked Sendable, CustomStringConvertible {
    var storage = sockaddr_storage()

    /// Parses a numeric IPv4/IPv6 literal without any lookup. Returns nil for host names.
    public init?(numericHost host: String, port: Int) {
        var v4 = sockaddr_in()
        if uv_ip4_addr(host, Int32(port), &v4) == 0 {
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: v4) { dst.copyMemory(from: $0) }
            }
            return
        }
        var v6 = sockaddr_in6()
        if uv_ip6_addr(host, Int32(port), &v6) == 0 {
            withUnsafeMutableBytes(of: &storage) { dst in
                withUnsafeBytes(of: v6) { dst.copyMemory(from: $0) }
            }
            return
        }
        return nil
    }

    init(storage: sockaddr_storage) { self.storage = storage }

    /// Resolves `host` (a literal or a name such as `localhost`) to its first address. Name lookups run on
    /// libuv's threadpool, never on the loop thread.
    public static func resolve(_ host: String, port: Int, loop: EventLoop) async throws -> SocketAddress {
        if let a = SocketAddress(numericHost: host, port: port) { return a }
        return try await loop.runBlocking {
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var res: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &res)
            guard rc == 0, let first = res else {
                throw WoodpeckerError(.ioFailure, "resolve \(host):\(port): \(String(cString: gai_strerror(rc))); check the host name",
                                      retryable: rc == EAI_AGAIN)
            }
            defer { freeaddrinfo(res) }
            var st = sockaddr_storage()
            withUnsafeMutableBytes(of: &st) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
            }
            return SocketAddress(storage: st)
        }
    }

    /// The port in host byte order.
    public var port: Int {
        withUnsafeBytes(of: storage) { raw -> Int in
            let family = raw.load(as: sockaddr.self).sa_family
            if family == sa_family_t(AF_INET6) {
                return Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            }
            return Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
        }
    }

    /// "1.2.3.4:80" or "[::1]:80".
    public var description: String {
        withUnsafeBytes(of: storage) { raw -> String in
            var name = [CChar](repeating: 0, count: 64)
            let family = raw.load(as: sockaddr.self).sa_family
            if family == sa_family_t(AF_INET6) {
                var a = raw.load(as: sockaddr_in6.self)
                _ = uv_ip6_name(&a, &name, name.count)
                return "[\(String(cChars: name))]:\(port)"
            }
            var a = raw.load(as: sockaddr_in.self)
            _ = uv_ip4_name(&a, &name, name.count)
            return "\(String(cChars: name)):\(port)"
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
    }

    static func peer(of tcp: UnsafeMutablePointer<uv_tcp_t>) -> SocketAddress? {
        var st = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &st) {
            uv_tcp_getpeername(tcp, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
        }
        return rc == 0 ? SocketAddress(storage: st) : nil
    }

    static func local(of tcp: UnsafeMutablePointer<uv_tcp_t>) -> SocketAddress? {
        var st = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &st) {
            uv_tcp_getsockname(tcp, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
        }
        return rc == 0 ? SocketAddress(storage: st) : nil
    }
}

/// "ECONNREFUSED (connection refused)" for a negative libuv status code.
func uvErrorText(_ rc: Int32) -> String {
    "\(String(cString: uv_err_name(rc))) (\(String(cString: uv_strerror(rc))))"
}

@inline(__always) func uvHandle<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
}

@inline(__always) func uvStream<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
}

/// Closes `h` unless it is closing already, and says whether it did (when it did not, `callback` never runs).
///
/// `EventLoop.shutdown` closes every handle still open, without a callback. libuv then calls a stream's pending
/// connect and shutdown requests back with ECANCELED from inside that close; an owner that reacts by closing
/// the handle itself must not reach `uv_close` a second time, which aborts the process. Every owner closes its
/// handles through here.
@discardableResult
func uvCloseIfOpen<T>(_ p: UnsafeMutablePointer<T>, _ callback: uv_close_cb?) -> Bool {
    let h = uvHandle(p)
    guard uv_is_closing(h) == 0 else { return false }
    uv_close(h, callback)
    return true
}
