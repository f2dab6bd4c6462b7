extension String {
    /// Decodes a NUL-terminated C character buffer (up to the first NUL) as UTF-8.
    public init(cChars: [CChar]) {
        let end = cChars.firstIndex(of: 0) ?? cChars.count
        self = String(decoding: cChars[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
