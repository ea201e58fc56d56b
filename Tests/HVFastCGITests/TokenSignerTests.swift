import Testing

@testable import HVFastCGI

extension HMAC {
    /// The tag of `message` as an array, for comparing with test vectors.
    func authenticationCode(for message: [UInt8]) throws -> [UInt8] {
        var tag = [UInt8](repeating: 0, count: digest.byteCount)
        let length = try message.withUnsafeBytes { bytes in
            try tag.withUnsafeMutableBytes { out in try authenticate(bytes, into: out) }
        }
        return Array(tag.prefix(length))
    }
}

private func hex(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex {
        let next = text.index(index, offsetBy: 2)
        bytes.append(UInt8(text[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// One RFC 4231 test case: the same key and data, with the expected tag for each digest.
struct HMACVector: Sendable, CustomTestStringConvertible {
    let name: String
    let key: [UInt8]
    let data: [UInt8]
    let expected: [HMACDigest: String]
    var testDescription: String { name }
}

@Suite struct HMACTests {
    static let rfc4231: [HMACVector] = [
        HMACVector(
            name: "4.2 test case 1", key: [UInt8](repeating: 0x0B, count: 20), data: bytes("Hi There"),
            expected: [
                .sha256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                .sha384:
                    "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
                .sha512:
                    "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ]),
        HMACVector(
            name: "4.3 test case 2", key: bytes("Jefe"), data: bytes("what do ya want for nothing?"),
            expected: [
                .sha256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                .sha384:
                    "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
                .sha512:
                    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ]),
        HMACVector(
            name: "4.4 test case 3", key: [UInt8](repeating: 0xAA, count: 20),
            data: [UInt8](repeating: 0xDD, count: 50),
            expected: [
                .sha256: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                .sha384:
                    "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
                .sha512:
                    "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
            ]),
        HMACVector(
            name: "4.5 test case 4", key: (1...25).map { UInt8($0) }, data: [UInt8](repeating: 0xCD, count: 50),
            expected: [
                .sha256: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                .sha384:
                    "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
                .sha512:
                    "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
            ]),
        HMACVector(
            name: "4.7 test case 6", key: [UInt8](repeating: 0xAA, count: 131),
            data: bytes("Test Using Larger Than Block-Size Key - Hash Key First"),
            expected: [
                .sha256: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                .sha384:
                    "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
                .sha512:
                    "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            ]),
        HMACVector(
            name: "4.8 test case 7", key: [UInt8](repeating: 0xAA, count: 131),
            data: bytes(
                "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."
            ),
            expected: [
                .sha256: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
                .sha384:
                    "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
                .sha512:
                    "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
            ]),
    ]

    @Test(arguments: rfc4231)
    func matchesRFC4231(_ vector: HMACVector) throws {
        for digest in HMACDigest.allCases {
            let hmac = try HMAC(digest: digest, key: vector.key)
            #expect(try hmac.authenticationCode(for: vector.data) == hex(vector.expected[digest]!), "\(digest)")
        }
    }

    @Test func reusesTheKeyedContextAcrossMessages() throws {
        let hmac = try HMAC(digest: .sha256, key: bytes("Jefe"))
        for _ in 0..<3 {
            #expect(try hmac.authenticationCode(for: bytes("Hi There")).count == 32)
            #expect(
                try hmac.authenticationCode(for: bytes("what do ya want for nothing?"))
                    == hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
        }
    }

    @Test func comparesInConstantTimeHelperCorrectly() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(constantTimeEquals([], []))
    }

    /// FIPS 180 test vectors: the digest Redis names a Lua script by.
    @Test func hashesWithSHA1AsRedisNamesScripts() {
        #expect(sha1Hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(sha1Hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
    }

    @Test func producesRandomBytes() throws {
        let a = try secureRandomBytes(count: 32)
        let b = try secureRandomBytes(count: 32)
        #expect(a.count == 32 && b.count == 32 && a != b)
        #expect(try secureRandomBytes(count: 0).isEmpty)
    }
}

@Suite struct TokenSignerTests {
    static let secret = [UInt8](repeating: 0x5A, count: 64)
    static let issuer = "hypervisor"
    static let now: Int64 = 1_700_000_000

    func signer(_ algorithm: JWTAlgorithm = .hs256, issuer: String = Self.issuer) throws -> TokenSigner {
        try TokenSigner(algorithm: algorithm, secret: Self.secret, issuer: issuer)
    }

    /// Builds a compact JWS from raw header and claims JSON, signed with `digest` (or with `signature` verbatim).
    func forge(header: String, claims: String, digest: HMACDigest? = .sha256, signature: String? = nil) throws
        -> String
    {
        let input = Base64URL.encode(bytes(header)) + "." + Base64URL.encode(bytes(claims))
        if let signature { return input + "." + signature }
        guard let digest else { return input + "." }
        let tag = try HMAC(digest: digest, key: Self.secret).authenticationCode(for: bytes(input))
        return input + "." + Base64URL.encode(tag)
    }

    func claims(sub: String = #""42""#, iat: Int64 = now, exp: Int64 = now + 60, iss: String = issuer) -> String {
        #"{"sub":\#(sub),"iat":\#(iat),"exp":\#(exp),"jti":"abc","iss":"\#(iss)"}"#
    }

    static let hs256Header = #"{"alg":"HS256","typ":"JWT"}"#

    // MARK: RFC 7515

    /// RFC 7515 appendix A.1: the JWK's key, the exact signing input and the published signature.
    static let rfc7515Key = Base64URL.decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")!
    static let rfc7515SigningInput =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        + ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    static let rfc7515Signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    @Test func rfc7515AppendixA1SignatureMatches() throws {
        let hmac = try HMAC(digest: .sha256, key: Self.rfc7515Key)
        let tag = try hmac.authenticationCode(for: bytes(Self.rfc7515SigningInput))
        #expect(Base64URL.encode(tag) == Self.rfc7515Signature)
    }

    @Test func rfc7515AppendixA1TokenPassesTheSignatureButNotOurClaimRules() throws {
        let signer = try TokenSigner(algorithm: .hs256, secret: Self.rfc7515Key, issuer: "joe")
        let token = Self.rfc7515SigningInput + "." + Self.rfc7515Signature
        // The header (with CRLF whitespace) and signature are accepted; the payload's boolean claim is not a shape
        // we mint, so the flat parser refuses it.
        #expect(throws: TokenError.malformed) { try signer.verify(token, now: 1_300_819_379) }
        var tampered = Array(token.utf8)
        tampered[tampered.count - 2] = UInt8(ascii: "Y")
        #expect(throws: TokenError.badSignature) {
            try signer.verify(String(decoding: tampered, as: UTF8.self), now: 1_300_819_379)
        }
    }

    // MARK: Round trips

    @Test(arguments: JWTAlgorithm.allCases)
    func signedTokensVerify(_ algorithm: JWTAlgorithm) throws {
        let signer = try signer(algorithm)
        let token = try signer.sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 1800)
        let claims = try signer.verify(token, now: Self.now + 10)
        #expect(claims.subject == 42)
        #expect(claims.issuedAt == Self.now)
        #expect(claims.expiresAt == Self.now + 1800)
        #expect(Base64URL.decode(claims.jti)?.count == 16)
    }

    @Test func mintsTheDocumentedHeaderAndClaims() throws {
        let token = try signer(.hs384).sign(subject: 9_000_000_000, issuedAt: Self.now, lifetimeSeconds: 30)
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        #expect(parts.count == 3)
        #expect(String(decoding: Base64URL.decode(parts[0])!, as: UTF8.self) == #"{"alg":"HS384","typ":"JWT"}"#)
        let payload = String(decoding: Base64URL.decode(parts[1])!, as: UTF8.self)
        #expect(payload.hasPrefix(#"{"sub":"9000000000","iat":1700000000,"exp":1700000030,"jti":""#))
        #expect(payload.hasSuffix(#"","iss":"hypervisor"}"#))
        #expect(Base64URL.decode(parts[2])?.count == 48)
    }

    @Test func everyTokenGetsAFreshJTI() throws {
        let signer = try signer()
        let a = try signer.verify(try signer.sign(subject: 1, issuedAt: Self.now, lifetimeSeconds: 60), now: Self.now)
        let b = try signer.verify(try signer.sign(subject: 1, issuedAt: Self.now, lifetimeSeconds: 60), now: Self.now)
        #expect(a.jti != b.jti)
    }

    @Test func escapesTheIssuerAndReadsEscapesBack() throws {
        let issuer = "hv \"prod\" \\ é\n"
        let signer = try signer(issuer: issuer)
        let token = try signer.sign(subject: -5, issuedAt: Self.now, lifetimeSeconds: 60)
        #expect(try signer.verify(token, now: Self.now).subject == -5)

        let escaped = try forge(
            header: Self.hs256Header,
            claims: #"{"sub":"7","iat":1,"exp":1800000000,"jti":"\u0041\ud83d\ude00","iss":"hyper\u0076isor\/"}"#)
        let claims = try self.signer(issuer: "hypervisor/").verify(escaped, now: Self.now)
        #expect(claims.jti == "A😀")
    }

    @Test func acceptsWhitespaceAndLowercaseTyp() throws {
        let token = try forge(header: " {\"typ\" : \"jwt\",\r\n \"alg\":\"HS256\"} ", claims: claims())
        #expect(try signer().verify(token, now: Self.now).subject == 42)
    }

    @Test func ignoresClaimsWeDoNotMint() throws {
        let token = try forge(
            header: Self.hs256Header,
            claims: #"{"aud":"x","sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor","n":-3}"#)
        #expect(try signer().verify(token, now: Self.now).subject == 42)
    }

    // MARK: Algorithm confusion

    @Test(arguments: ["none", "None", "NONE", "nOnE"])
    func refusesAlgNoneInAnyCase(_ alg: String) throws {
        let header = #"{"alg":"\#(alg)","typ":"JWT"}"#
        let signer = try signer()
        for token in [
            try forge(header: header, claims: claims(), digest: nil),
            try forge(header: header, claims: claims(), signature: "c2lnbmF0dXJl"),
            try forge(header: header, claims: claims(), digest: .sha256),
        ] {
            #expect(throws: TokenError.algorithmNotAllowed) { try signer.verify(token, now: Self.now) }
        }
    }

    @Test(arguments: ["HS384", "HS512", "hs256", "RS256", "ES256", "", "HS256 "])
    func refusesEveryOtherAlgorithm(_ alg: String) throws {
        let token = try forge(header: #"{"alg":"\#(alg)","typ":"JWT"}"#, claims: claims())
        #expect(throws: TokenError.algorithmNotAllowed) { try signer().verify(token, now: Self.now) }
    }

    @Test func refusesATokenMintedWithAnotherHSAlgorithm() throws {
        let token = try signer(.hs384).sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 60)
        #expect(throws: TokenError.algorithmNotAllowed) { try signer(.hs256).verify(token, now: Self.now) }
        #expect(throws: TokenError.algorithmNotAllowed) { try signer(.hs512).verify(token, now: Self.now) }
    }

    @Test func refusesAnHS256HeaderOverAnotherAlgorithmsSignature() throws {
        let token = try forge(header: Self.hs256Header, claims: claims(), digest: .sha512)
        #expect(throws: TokenError.badSignature) { try signer().verify(token, now: Self.now) }
    }

    @Test func refusesAMissingOrNonStringAlg() throws {
        for header in [#"{"typ":"JWT"}"#, #"{"alg":256}"#, "{}"] {
            let token = try forge(header: header, claims: claims())
            #expect(throws: TokenError.algorithmNotAllowed) { try signer().verify(token, now: Self.now) }
        }
    }

    @Test func refusesHeaderParametersWeNeverIssue() throws {
        for header in [
            #"{"alg":"HS256","crit":"exp"}"#, #"{"alg":"HS256","kid":"1"}"#, #"{"alg":"HS256","jku":"http://x"}"#,
            #"{"alg":"HS256","typ":"JOSE"}"#,
        ] {
            let token = try forge(header: header, claims: claims())
            #expect(throws: TokenError.unsupportedHeader) { try signer().verify(token, now: Self.now) }
        }
        let critArray = try forge(header: #"{"alg":"HS256","crit":["exp"],"exp":1}"#, claims: claims())
        #expect(throws: TokenError.malformed) { try signer().verify(critArray, now: Self.now) }
    }

    @Test func refusesDuplicateHeaderKeys() throws {
        let token = try forge(header: #"{"alg":"HS256","alg":"none"}"#, claims: claims())
        #expect(throws: TokenError.malformed) { try signer().verify(token, now: Self.now) }
    }

    // MARK: Signature

    @Test func refusesATamperedPayload() throws {
        let signer = try signer()
        let token = try signer.sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 60)
        let parts = token.split(separator: ".")
        var payload = String(decoding: Base64URL.decode(parts[1])!, as: UTF8.self)
        payload = payload.replacingFirst(#""sub":"42""#, with: #""sub":"1""#)
        let tampered = parts[0] + "." + Base64URL.encode(bytes(payload)) + "." + parts[2]
        #expect(throws: TokenError.badSignature) { try signer.verify(tampered, now: Self.now) }
    }

    @Test func refusesTruncatedEmptyOrAlteredSignatures() throws {
        let signer = try signer()
        let token = try signer.sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 60)
        let input = token[..<token.lastIndex(of: ".")!]
        let signature = token[token.index(after: token.lastIndex(of: ".")!)...]
        for bad in [
            String(signature.dropLast()), String(signature.dropLast(4)), String(signature.prefix(22)), "",
            String(signature.dropLast()) + (signature.last == "A" ? "B" : "A"), String(signature) + "AAAA",
        ] {
            #expect(throws: TokenError.badSignature) { try signer.verify(input + "." + bad, now: Self.now) }
        }
    }

    @Test func refusesATokenSignedWithAnotherSecret() throws {
        let other = try TokenSigner(algorithm: .hs256, secret: [UInt8](repeating: 1, count: 32), issuer: Self.issuer)
        let token = try other.sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 60)
        #expect(throws: TokenError.badSignature) { try signer().verify(token, now: Self.now) }
    }

    // MARK: Claims

    @Test func refusesAnExpiredToken() throws {
        let signer = try signer()
        let token = try signer.sign(subject: 42, issuedAt: Self.now, lifetimeSeconds: 60)
        #expect(try signer.verify(token, now: Self.now + 59).subject == 42)
        #expect(throws: TokenError.expired) { try signer.verify(token, now: Self.now + 60) }
        #expect(throws: TokenError.expired) { try signer.verify(token, now: Self.now + 1_000_000) }
    }

    @Test func requiresEveryClaimWeMint() throws {
        let cases: [(String, String)] = [
            ("exp", #"{"sub":"42","iat":1,"jti":"j","iss":"hypervisor"}"#),
            ("iat", #"{"sub":"42","exp":1800000000,"jti":"j","iss":"hypervisor"}"#),
            ("sub", #"{"iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor"}"#),
            ("jti", #"{"sub":"42","iat":1,"exp":1800000000,"iss":"hypervisor"}"#),
            ("iss", #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j"}"#),
        ]
        for (claim, json) in cases {
            let token = try forge(header: Self.hs256Header, claims: json)
            #expect(throws: TokenError.missingClaim(claim)) { try signer().verify(token, now: Self.now) }
        }
    }

    @Test func refusesAWrongIssuer() throws {
        let token = try forge(header: Self.hs256Header, claims: claims(iss: "someone-else"))
        #expect(throws: TokenError.wrongIssuer) { try signer().verify(token, now: Self.now) }
        let minted = try signer(issuer: "staging").sign(subject: 1, issuedAt: Self.now, lifetimeSeconds: 60)
        #expect(throws: TokenError.wrongIssuer) { try signer().verify(minted, now: Self.now) }
    }

    @Test(arguments: ["42", #""042""#, #""+42""#, #""4 2""#, #""abc""#, #""""#, #""9223372036854775808""#])
    func refusesASubjectThatIsNotACanonicalDecimalString(_ sub: String) throws {
        let token = try forge(header: Self.hs256Header, claims: claims(sub: sub))
        #expect(throws: TokenError.invalidClaim("sub")) { try signer().verify(token, now: Self.now) }
    }

    @Test func refusesNonIntegerTimes() throws {
        for (claim, json) in [
            ("exp", #"{"sub":"42","iat":1,"exp":"1800000000","jti":"j","iss":"hypervisor"}"#),
            ("iat", #"{"sub":"42","iat":"1","exp":1800000000,"jti":"j","iss":"hypervisor"}"#),
        ] {
            let token = try forge(header: Self.hs256Header, claims: json)
            #expect(throws: TokenError.invalidClaim(claim)) { try signer().verify(token, now: Self.now) }
        }
    }

    @Test(arguments: [
        #"{"sub":"42","iat":1,"exp":1800000000,"exp":1,"jti":"j","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor"} x"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor"}{}"#,
        #"{"sub":"42","iat":1,"exp":1800000000.5,"jti":"j","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":1,"exp":18e8,"jti":"j","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":01,"exp":1800000000,"jti":"j","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":99999999999999999999,"exp":1800000000,"jti":"j","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor","x":{}}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor","x":[1]}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor","x":true}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor","x":null}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor",}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j\ud800","iss":"hypervisor"}"#,
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j\x","iss":"hypervisor"}"#,
        "{\"sub\":\"42\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\u{01}\",\"iss\":\"hypervisor\"}",
        #"{"sub":"42","iat":1,"exp":1800000000,"jti":"j","iss":"hypervisor""#,
        #"["sub"]"#, "", "null",
    ])
    func refusesClaimsThatAreNotFlatWellFormedJSON(_ json: String) throws {
        let token = try forge(header: Self.hs256Header, claims: json)
        #expect(throws: TokenError.malformed) { try signer().verify(token, now: Self.now) }
    }

    @Test func refusesInvalidUTF8InClaims() throws {
        var payload = bytes(claims())
        payload[payload.count - 4] = 0xFF
        let input = Base64URL.encode(bytes(Self.hs256Header)) + "." + Base64URL.encode(payload)
        let tag = try HMAC(digest: .sha256, key: Self.secret).authenticationCode(for: bytes(input))
        #expect(throws: TokenError.malformed) {
            try signer().verify(input + "." + Base64URL.encode(tag), now: Self.now)
        }
    }

    // MARK: Shape

    @Test(arguments: [
        "", ".", "..", "...", "abc", "a.b", "a.b.c.d", "e30.e30.e30.e30.e30", "!!!.e30.c2ln", "e30.e30",
        "ey J.e30.c2ln", "é.é.é",
    ])
    func refusesGarbageAndWrongSegmentCounts(_ token: String) throws {
        #expect(throws: TokenError.malformed) { try signer().verify(token, now: Self.now) }
    }

    @Test func refusesOverlongTokens() throws {
        let big = String(repeating: "a", count: 5000)
        let token = try forge(header: Self.hs256Header, claims: claims(iss: big))
        #expect(throws: TokenError.malformed) { try signer(issuer: big).verify(token, now: Self.now) }
    }

    @Test func refusesShortSecrets() {
        #expect(throws: CryptoError.keyTooShort(minimumBytes: 32, actualBytes: 31)) {
            try TokenSigner(algorithm: .hs256, secret: [UInt8](repeating: 1, count: 31), issuer: "x")
        }
        #expect(throws: CryptoError.keyTooShort(minimumBytes: 32, actualBytes: 0)) {
            try TokenSigner(algorithm: .hs256, secret: [], issuer: "x")
        }
        // RFC 7518 §3.2: at least as long as the hash output.
        #expect(throws: CryptoError.keyTooShort(minimumBytes: 48, actualBytes: 32)) {
            try TokenSigner(algorithm: .hs384, secret: [UInt8](repeating: 1, count: 32), issuer: "x")
        }
        #expect(throws: CryptoError.keyTooShort(minimumBytes: 64, actualBytes: 63)) {
            try TokenSigner(algorithm: .hs512, secret: [UInt8](repeating: 1, count: 63), issuer: "x")
        }
        #expect(throws: Never.self) {
            try TokenSigner(algorithm: .hs256, secret: [UInt8](repeating: 1, count: 32), issuer: "x")
        }
    }
}

extension String {
    fileprivate func replacingFirst(_ target: String, with replacement: String) -> String {
        var copy = self
        if let range = copy.firstRange(of: target) { copy.replaceSubrange(range, with: replacement) }
        return copy
    }
}
