/// The HMAC JWS algorithms a deployment can be configured with (`JWT_ALGORITHM`).
enum JWTAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case hs384 = "HS384"
    case hs512 = "HS512"

    var digest: HMACDigest {
        switch self {
        case .hs256: .sha256
        case .hs384: .sha384
        case .hs512: .sha512
        }
    }
}

/// The claims of a token that passed `TokenSigner.verify`.
struct TokenClaims: Sendable, Equatable {
    /// The user id (`sub`).
    var subject: Int64
    /// `iat`, seconds since the epoch; compared with the user's last logout.
    var issuedAt: Int64
    /// `exp`, seconds since the epoch.
    var expiresAt: Int64
    /// `jti`, 128 random bits in base64url.
    var jti: String
}

/// Why a token was refused. Every case means 401 to the client; none carries any part of the token.
enum TokenError: Error, Equatable, Sendable {
    /// Not three base64url segments of flat JSON objects, or too long.
    case malformed
    /// `alg` missing or not the configured algorithm (this includes `none` in any spelling).
    case algorithmNotAllowed
    /// A header parameter other than `alg` and `typ` (`kid`, `jku`, …), or a `typ` other than JWT. A real `crit` is
    /// an array, which the flat parser already refuses as `.malformed`.
    case unsupportedHeader
    /// The signature is missing, has the wrong length, or does not match.
    case badSignature
    /// A required claim (`sub`, `iat`, `exp`, `jti`, `iss`) is absent.
    case missingClaim(String)
    /// A claim has the wrong type or an impossible value.
    case invalidClaim(String)
    /// `iss` is not this service.
    case wrongIssuer
    /// `now >= exp`.
    case expired
    /// OpenSSL failed while computing the MAC.
    case crypto(CryptoError)
}

/// Issues and checks HMAC-signed JWTs (RFC 7519) following RFC 8725.
///
/// `verify` accepts only tokens shaped like the ones `sign` mints: the configured algorithm, a header of just `alg`
/// and optionally `typ: JWT`, and flat string/integer claims. Header and claims are parsed by a small hand-written
/// parser because Foundation's base64 and `JSONDecoder` cost ≈ 17 µs per check; a whole HS256 `verify` here costs
/// ≈ 1.4 µs, of which the HMAC is 0.4 µs. The payload is parsed only after the signature matched.
///
/// `iat` is required but not compared with `now`: callers compare it with the user's last logout instead.
///
/// `sub` is the user id as a decimal string, since RFC 7519 makes `sub` a StringOrURI. A JSON integer `sub` is
/// refused rather than tolerated: only this class mints tokens, and one accepted encoding per claim leaves less to
/// get wrong.
///
/// Holds a keyed `HMAC` that is reused in place, so it is not `Sendable`: each worker process builds its own.
final class TokenSigner {
    /// Tokens longer than this are refused before any decoding; ours are about 250 bytes.
    static let maximumTokenLength = 4096

    let algorithm: JWTAlgorithm
    let issuer: String
    private let hmac: HMAC
    /// The base64url header followed by ".", identical for every token this signer mints.
    private let encodedHeader: [UInt8]

    /// Creates a signer for `algorithm` keyed with `secret`.
    ///
    /// Throws `CryptoError.keyTooShort` if `secret` is shorter than 32 bytes or than the digest (RFC 7518 §3.2: 48
    /// bytes for HS384, 64 for HS512), and `CryptoError` if OpenSSL cannot key the HMAC.
    init(algorithm: JWTAlgorithm, secret: [UInt8], issuer: String) throws(CryptoError) {
        let minimum = max(32, algorithm.digest.byteCount)
        guard secret.count >= minimum else {
            throw .keyTooShort(minimumBytes: minimum, actualBytes: secret.count)
        }
        self.algorithm = algorithm
        self.issuer = issuer
        self.hmac = try HMAC(digest: algorithm.digest, key: secret)
        let header = #"{"alg":"\#(algorithm.rawValue)","typ":"JWT"}"#
        self.encodedHeader = Array(Base64URL.encode(Array(header.utf8)).utf8) + [UInt8(ascii: ".")]
    }

    /// Mints a token for user `subject`, valid from `issuedAt` for `lifetimeSeconds`.
    ///
    /// `lifetimeSeconds` must be positive and `issuedAt + lifetimeSeconds` must fit in Int64 (configuration bounds
    /// the lifetime); violating that is a programming error and traps. Throws `CryptoError` if the random generator
    /// or the MAC fails: the caller answers 500 rather than minting a token without a random `jti`.
    func sign(subject: Int64, issuedAt: Int64, lifetimeSeconds: Int64) throws(CryptoError) -> String {
        precondition(lifetimeSeconds > 0, "token lifetime must be positive")
        let (expiresAt, overflow) = issuedAt.addingReportingOverflow(lifetimeSeconds)
        precondition(!overflow, "token expiry overflows Int64")
        let jti = Base64URL.encode(try secureRandomBytes(count: 16))

        var claims: [UInt8] = []
        claims.reserveCapacity(96 + issuer.utf8.count)
        claims.append(contentsOf: #"{"sub":""#.utf8)
        claims.append(contentsOf: String(subject).utf8)
        claims.append(contentsOf: #"","iat":"#.utf8)
        claims.append(contentsOf: String(issuedAt).utf8)
        claims.append(contentsOf: #","exp":"#.utf8)
        claims.append(contentsOf: String(expiresAt).utf8)
        claims.append(contentsOf: #","jti":""#.utf8)
        claims.append(contentsOf: jti.utf8)
        claims.append(contentsOf: #"","iss":"#.utf8)
        appendJSONString(issuer, to: &claims)
        claims.append(UInt8(ascii: "}"))

        var token = encodedHeader
        token.append(contentsOf: Base64URL.encode(claims).utf8)
        var tag = [UInt8](repeating: 0, count: algorithm.digest.byteCount)
        // Array's withUnsafe… methods rethrow untyped errors, so the typed error travels out as a Result.
        let length = try token.withUnsafeBytes { input in
            tag.withUnsafeMutableBytes { out in
                Result { () throws(CryptoError) in try hmac.authenticate(input, into: out) }
            }
        }.get()
        token.append(UInt8(ascii: "."))
        token.append(contentsOf: Base64URL.encode(tag[0..<length]).utf8)
        return String(decoding: token, as: UTF8.self)
    }

    /// Checks `token` and returns its claims.
    ///
    /// Order matters (RFC 8725 §3.1, §3.3): the header's `alg` is checked against the configured algorithm first,
    /// then the signature in constant time, and only then is the payload parsed. Throws `TokenError`: `.malformed`,
    /// `.algorithmNotAllowed`, `.unsupportedHeader`, `.badSignature`, then `.missingClaim`/`.invalidClaim` (`sub`,
    /// `iat`, `exp`, `jti`, `iss` are all required), `.wrongIssuer`, and `.expired` when `now >= exp` (no leeway).
    func verify(_ token: String, now: Int64) throws(TokenError) -> TokenClaims {
        var token = token
        token.makeContiguousUTF8()
        let result = token.utf8.withContiguousStorageIfAvailable { bytes -> Result<TokenClaims, TokenError> in
            do throws(TokenError) {
                return .success(try verify(bytes, now: now))
            } catch {
                return .failure(error)
            }
        }
        guard let result else { throw .malformed }
        return try result.get()
    }

    private func verify(_ token: UnsafeBufferPointer<UInt8>, now: Int64) throws(TokenError) -> TokenClaims {
        guard token.count <= Self.maximumTokenLength,
            let firstDot = token.firstIndex(of: UInt8(ascii: ".")),
            let secondDot = token[(firstDot + 1)...].firstIndex(of: UInt8(ascii: ".")),
            !token[(secondDot + 1)...].contains(UInt8(ascii: "."))
        else { throw .malformed }

        guard let header = Base64URL.decode(UnsafeBufferPointer(rebasing: token[..<firstDot])) else {
            throw .malformed
        }
        try checkHeader(header)

        guard secondDot + 1 < token.count,
            let signature = Base64URL.decode(UnsafeBufferPointer(rebasing: token[(secondDot + 1)...])),
            signature.count == algorithm.digest.byteCount
        else { throw .badSignature }
        var expected = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let matches = try withUnsafeMutableBytes(of: &expected) { (out) throws(TokenError) -> Bool in
            let length: Int
            do throws(CryptoError) {
                length = try hmac.authenticate(
                    UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: token[..<secondDot])), into: out)
            } catch {
                throw .crypto(error)
            }
            return signature.withUnsafeBytes {
                constantTimeEquals(UnsafeRawBufferPointer(rebasing: out[..<length]), $0)
            }
        }
        guard matches else { throw .badSignature }

        guard let payload = Base64URL.decode(UnsafeBufferPointer(rebasing: token[(firstDot + 1)..<secondDot])) else {
            throw .malformed
        }
        return try checkClaims(payload, now: now)
    }

    private func checkHeader(_ header: [UInt8]) throws(TokenError) {
        let members = try header.withUnsafeBufferPointer { bytes in
            Result { () throws(TokenError) in try FlatJSON.parse(bytes) }
        }.get()
        var algorithmMatches = false
        for member in members {
            switch (member.key, member.value) {
            case ("alg", .string(let alg)):
                // Exact, case-sensitive match: "none", "None", "hs256" and every other algorithm are refused.
                algorithmMatches = alg == algorithm.rawValue
            case ("typ", .string(let typ)):
                // RFC 7515 §4.1.9: media type names compare case-insensitively.
                guard typ.utf8.count == 3, typ.utf8.elementsEqual("JWT".utf8, by: { $0 & 0xDF == $1 }) else {
                    throw .unsupportedHeader
                }
            case ("alg", _):
                throw .algorithmNotAllowed
            default:
                throw .unsupportedHeader
            }
        }
        guard algorithmMatches else { throw .algorithmNotAllowed }
    }

    private func checkClaims(_ payload: [UInt8], now: Int64) throws(TokenError) -> TokenClaims {
        let members = try payload.withUnsafeBufferPointer { bytes in
            Result { () throws(TokenError) in try FlatJSON.parse(bytes) }
        }.get()
        var subject: Int64?
        var issuedAt: Int64?
        var expiresAt: Int64?
        var jti: String?
        var issuerMatches: Bool?
        for member in members {
            switch member.key {
            case "sub":
                guard case .string(let text) = member.value, let id = Int64(text), String(id) == text else {
                    throw .invalidClaim("sub")
                }
                subject = id
            case "iat":
                guard case .integer(let value) = member.value else { throw .invalidClaim("iat") }
                issuedAt = value
            case "exp":
                guard case .integer(let value) = member.value else { throw .invalidClaim("exp") }
                expiresAt = value
            case "jti":
                guard case .string(let value) = member.value, !value.isEmpty else { throw .invalidClaim("jti") }
                jti = value
            case "iss":
                guard case .string(let value) = member.value else { throw .invalidClaim("iss") }
                issuerMatches = value == issuer
            default:
                // Claims we do not mint (aud, nbf, …) cannot be in a token whose signature matched; ignore them.
                break
            }
        }
        guard let expiresAt else { throw .missingClaim("exp") }
        guard let issuedAt else { throw .missingClaim("iat") }
        guard let subject else { throw .missingClaim("sub") }
        guard let jti else { throw .missingClaim("jti") }
        guard let issuerMatches else { throw .missingClaim("iss") }
        guard issuerMatches else { throw .wrongIssuer }
        guard now < expiresAt else { throw .expired }
        return TokenClaims(subject: subject, issuedAt: issuedAt, expiresAt: expiresAt, jti: jti)
    }
}

/// Appends `text` as a JSON string literal (RFC 8259 §7).
private func appendJSONString(_ text: String, to out: inout [UInt8]) {
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    out.append(UInt8(ascii: "\""))
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
            out.append(UInt8(ascii: "\\"))
            out.append(byte)
        case 0..<0x20:
            out.append(contentsOf: #"\u00"#.utf8)
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0F)])
        default:
            out.append(byte)
        }
    }
    out.append(UInt8(ascii: "\""))
}

/// A parser for the one JSON shape a JWT header or claim set of ours has: a single object whose values are strings
/// or integers.
///
/// Nested objects, arrays, booleans, null, fractions and exponents are refused rather than skipped: nothing we mint
/// uses them. Duplicate keys are refused (RFC 8725 §3.4 warns that parsers disagree on which one wins), as are
/// invalid UTF-8, lone surrogates, unescaped control characters and anything after the closing brace.
private enum FlatJSON {
    enum Value: Equatable {
        case string(String)
        case integer(Int64)
    }

    /// More members than this is not a token of ours; the limit also bounds the quadratic duplicate check.
    static let maximumMembers = 16

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(TokenError) -> [(key: String, value: Value)] {
        var parser = Parser(bytes: bytes)
        var members: [(key: String, value: Value)] = []
        members.reserveCapacity(8)
        parser.skipWhitespace()
        try parser.expect(UInt8(ascii: "{"))
        parser.skipWhitespace()
        if parser.peek() == UInt8(ascii: "}") {
            parser.index += 1
        } else {
            while true {
                parser.skipWhitespace()
                let key = try parser.parseString()
                parser.skipWhitespace()
                try parser.expect(UInt8(ascii: ":"))
                parser.skipWhitespace()
                let value = try parser.parseValue()
                guard members.count < maximumMembers, !members.contains(where: { $0.key == key }) else {
                    throw .malformed
                }
                members.append((key, value))
                parser.skipWhitespace()
                guard let next = parser.next() else { throw .malformed }
                if next == UInt8(ascii: "}") { break }
                guard next == UInt8(ascii: ",") else { throw .malformed }
            }
        }
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw .malformed }
        return members
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        func peek() -> UInt8? {
            index < bytes.count ? bytes[index] : nil
        }

        mutating func next() -> UInt8? {
            guard index < bytes.count else { return nil }
            defer { index += 1 }
            return bytes[index]
        }

        mutating func expect(_ byte: UInt8) throws(TokenError) {
            guard next() == byte else { throw .malformed }
        }

        mutating func skipWhitespace() {
            while let byte = peek(),
                byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
                    || byte == UInt8(ascii: "\r")
            {
                index += 1
            }
        }

        mutating func parseValue() throws(TokenError) -> Value {
            guard let first = peek() else { throw .malformed }
            switch first {
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .integer(try parseInteger())
            default: throw .malformed
            }
        }

        /// An RFC 8259 integer (no leading zeros, no fraction or exponent) that fits in Int64.
        mutating func parseInteger() throws(TokenError) -> Int64 {
            let negative = peek() == UInt8(ascii: "-")
            if negative { index += 1 }
            let start = index
            var magnitude: UInt64 = 0
            while let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                guard !o1, !o2 else { throw .malformed }
                magnitude = sum
                index += 1
            }
            let digits = index - start
            guard digits > 0, digits == 1 || bytes[start] != UInt8(ascii: "0") else { throw .malformed }
            if let byte = peek(), byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                throw .malformed
            }
            if negative {
                guard magnitude <= UInt64(Int64.max) + 1 else { throw .malformed }
                return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
            }
            guard magnitude <= UInt64(Int64.max) else { throw .malformed }
            return Int64(magnitude)
        }

        mutating func parseString() throws(TokenError) -> String {
            try expect(UInt8(ascii: "\""))
            let start = index
            // Fast path: no escapes, the common case for every string we mint.
            while let byte = peek(), byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
                guard byte >= 0x20 else { throw .malformed }
                index += 1
            }
            guard let stop = peek() else { throw .malformed }
            if stop == UInt8(ascii: "\"") {
                index += 1
                return try makeString(UnsafeBufferPointer(rebasing: bytes[start..<(index - 1)]))
            }
            var unescaped = Array(bytes[start..<index])
            while true {
                guard let byte = next() else { throw .malformed }
                switch byte {
                case UInt8(ascii: "\""):
                    return try unescaped.withUnsafeBufferPointer { text in
                        Result { () throws(TokenError) in try makeString(text) }
                    }.get()
                case UInt8(ascii: "\\"):
                    try appendEscape(to: &unescaped)
                case 0..<0x20:
                    throw .malformed
                default:
                    unescaped.append(byte)
                }
            }
        }

        /// Makes a String from UTF-8, refusing invalid UTF-8 instead of repairing it.
        private func makeString(_ utf8: UnsafeBufferPointer<UInt8>) throws(TokenError) -> String {
            // `String(decoding:)` replaces invalid sequences with U+FFFD, so the result differs from the input
            // exactly when the input was invalid. (`String(validating:)` is not specialized and costs 4× more.)
            let text = String(decoding: utf8, as: UTF8.self)
            if utf8.contains(where: { $0 >= 0x80 }), !text.utf8.elementsEqual(utf8) { throw .malformed }
            return text
        }

        private mutating func appendEscape(to out: inout [UInt8]) throws(TokenError) {
            guard let escape = next() else { throw .malformed }
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = UInt32(try parseHex4())
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else { throw .malformed }
                    let low = UInt32(try parseHex4())
                    guard low >= 0xDC00 && low < 0xE000 else { throw .malformed }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw .malformed
                }
                guard let unicode = Unicode.Scalar(scalar) else { throw .malformed }
                out.append(contentsOf: UTF8.encode(unicode)!)
            default:
                throw .malformed
            }
        }

        private mutating func parseHex4() throws(TokenError) -> UInt16 {
            var value: UInt16 = 0
            for _ in 0..<4 {
                guard let byte = next() else { throw .malformed }
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw .malformed
                }
                value = value << 4 | UInt16(digit)
            }
            return value
        }
    }
}
