/// Base64url without padding (RFC 4648 §5), as JWTs use it.
///
/// Hand-written because Foundation's base64 costs more than the whole HMAC on the token path. Decoding is strict:
/// characters outside the alphabet, `=` padding, a length of 4k+1, and non-zero unused trailing bits are all
/// rejected, so each byte string has exactly one accepted encoding (no malleable signatures).
enum Base64URL {
    /// Encodes `bytes` without padding.
    static func encode(_ bytes: some Collection<UInt8>) -> String {
        Base64Codec.encode(bytes, alphabet: .url, padded: false)
    }

    /// Decodes unpadded base64url text; returns nil if it is not canonical base64url.
    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = text.utf8
        if let decoded = utf8.withContiguousStorageIfAvailable({ decode($0) }) { return decoded }
        return Array(utf8).withUnsafeBufferPointer { decode($0) }
    }

    /// Decodes unpadded base64url bytes; returns nil if they are not canonical base64url.
    static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        Base64Codec.decode(text, alphabet: .url, padding: .forbidden)
    }
}

/// Standard base64 (RFC 4648 §4), as PHC strings use it (written without padding).
///
/// Decoding accepts text with or without `=` padding, but otherwise is as strict as `Base64URL`.
enum Base64 {
    /// Encodes `bytes`, with `=` padding only if `padded`.
    static func encode(_ bytes: some Collection<UInt8>, padded: Bool = false) -> String {
        Base64Codec.encode(bytes, alphabet: .standard, padded: padded)
    }

    /// Decodes standard base64 with or without padding; returns nil if it is not canonical base64.
    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        Array(text.utf8).withUnsafeBufferPointer {
            Base64Codec.decode($0, alphabet: .standard, padding: .optional)
        }
    }
}

/// The shared encoder and decoder behind `Base64URL` and `Base64`.
private enum Base64Codec {
    enum Alphabet {
        case standard, url
    }

    enum Padding {
        case forbidden, optional
    }

    static func symbol(_ value: UInt8, _ alphabet: Alphabet) -> UInt8 {
        switch value {
        case 0..<26: value &+ UInt8(ascii: "A")
        case 26..<52: value &- 26 &+ UInt8(ascii: "a")
        case 52..<62: value &- 52 &+ UInt8(ascii: "0")
        case 62: alphabet == .url ? UInt8(ascii: "-") : UInt8(ascii: "+")
        default: alphabet == .url ? UInt8(ascii: "_") : UInt8(ascii: "/")
        }
    }

    /// The 6-bit value of an alphabet character, or 0xFF for anything else.
    @inline(__always)
    static func value(_ c: UInt8, _ alphabet: Alphabet) -> UInt8 {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c &- UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c &- UInt8(ascii: "a") &+ 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c &- UInt8(ascii: "0") &+ 52
        case UInt8(ascii: "-"): alphabet == .url ? 62 : 0xFF
        case UInt8(ascii: "_"): alphabet == .url ? 63 : 0xFF
        case UInt8(ascii: "+"): alphabet == .standard ? 62 : 0xFF
        case UInt8(ascii: "/"): alphabet == .standard ? 63 : 0xFF
        default: 0xFF
        }
    }

    static func encode(_ bytes: some Collection<UInt8>, alphabet: Alphabet, padded: Bool) -> String {
        let count = bytes.count
        let full = count / 3
        let rest = count % 3
        let length = padded ? (count + 2) / 3 * 4 : full * 4 + (rest == 0 ? 0 : rest + 1)
        return String(unsafeUninitializedCapacity: length) { out in
            var i = 0
            var iterator = bytes.makeIterator()
            for _ in 0..<full {
                let b0 = iterator.next()!
                let b1 = iterator.next()!
                let b2 = iterator.next()!
                out[i] = symbol(b0 >> 2, alphabet)
                out[i + 1] = symbol((b0 & 0x03) << 4 | b1 >> 4, alphabet)
                out[i + 2] = symbol((b1 & 0x0F) << 2 | b2 >> 6, alphabet)
                out[i + 3] = symbol(b2 & 0x3F, alphabet)
                i += 4
            }
            if rest > 0 {
                let b0 = iterator.next()!
                let b1 = rest == 2 ? iterator.next()! : 0
                out[i] = symbol(b0 >> 2, alphabet)
                out[i + 1] = symbol((b0 & 0x03) << 4 | b1 >> 4, alphabet)
                i += 2
                if rest == 2 {
                    out[i] = symbol((b1 & 0x0F) << 2, alphabet)
                    i += 1
                }
                if padded {
                    while i < length {
                        out[i] = UInt8(ascii: "=")
                        i += 1
                    }
                }
            }
            return i
        }
    }

    static func decode(_ input: UnsafeBufferPointer<UInt8>, alphabet: Alphabet, padding: Padding) -> [UInt8]? {
        var text = input
        if padding == .optional, text.count % 4 == 0 {
            // Padding, when present, must make the length a multiple of 4 and be at most two characters.
            var end = text.count
            while end > 0, text.count - end < 2, text[end - 1] == UInt8(ascii: "=") { end -= 1 }
            text = UnsafeBufferPointer(rebasing: input[0..<end])
        }
        let rest = text.count % 4
        if rest == 1 { return nil }
        let full = text.count / 4
        let length = full * 3 + (rest == 0 ? 0 : rest - 1)
        var valid = true
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { out, initialized in
            var o = 0
            var i = 0
            for _ in 0..<full {
                let v0 = value(text[i], alphabet)
                let v1 = value(text[i + 1], alphabet)
                let v2 = value(text[i + 2], alphabet)
                let v3 = value(text[i + 3], alphabet)
                if (v0 | v1 | v2 | v3) & 0xC0 != 0 {
                    valid = false
                    break
                }
                out[o] = v0 << 2 | v1 >> 4
                out[o + 1] = v1 << 4 | v2 >> 2
                out[o + 2] = v2 << 6 | v3
                o += 3
                i += 4
            }
            if valid, rest >= 2 {
                let v0 = value(text[i], alphabet)
                let v1 = value(text[i + 1], alphabet)
                let v2 = rest == 3 ? value(text[i + 2], alphabet) : 0
                // The bits below the last whole byte must be zero, or two encodings would decode alike.
                let unusedBits = rest == 2 ? v1 & 0x0F : v2 & 0x03
                if (v0 | v1 | v2) & 0xC0 != 0 || unusedBits != 0 {
                    valid = false
                } else {
                    out[o] = v0 << 2 | v1 >> 4
                    o += 1
                    if rest == 3 {
                        out[o] = v1 << 4 | v2 >> 2
                        o += 1
                    }
                }
            }
            if !valid { o = 0 }
            initialized = o
        }
        return valid ? bytes : nil
    }
}
