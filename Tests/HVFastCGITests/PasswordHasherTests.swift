import Testing

@testable import HVFastCGI

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

@Suite struct PasswordHasherTests {
    /// Cheap parameters so the suite runs in milliseconds; production uses `ScryptParameters.default`.
    static let low = ScryptParameters(logN: 10, r: 8, p: 1)!
    static let higher = ScryptParameters(logN: 11, r: 8, p: 1)!
    let password = Array("correct horse battery staple".utf8)

    // MARK: RFC 7914 §12

    @Test func scryptMatchesRFC7914EmptyPasswordVector() throws {
        let key = try scrypt(password: [], salt: [], n: 16, r: 1, p: 1, length: 64)
        #expect(
            key
                == hex(
                    "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"
                ))
    }

    @Test func scryptMatchesRFC7914PasswordNaClVector() throws {
        let key = try scrypt(
            password: Array("password".utf8), salt: Array("NaCl".utf8), n: 1024, r: 8, p: 16, length: 64)
        #expect(
            key
                == hex(
                    "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
                ))
    }

    @Test func scryptMatchesRFC7914SodiumChlorideVector() throws {
        // N=2^14, r=8 needs 16 MiB: under OpenSSL's default cap, but exercises the explicit maxmem path too.
        let key = try scrypt(
            password: Array("pleaseletmein".utf8), salt: Array("SodiumChloride".utf8), n: 16384, r: 8, p: 1,
            length: 64)
        #expect(
            key
                == hex(
                    "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"
                ))
    }

    @Test func scryptRefusesANonPowerOfTwoN() {
        #expect(throws: CryptoError.self) { try scrypt(password: [1], salt: [2], n: 1000, r: 8, p: 1, length: 32) }
    }

    @Test func defaultParametersNeedMoreThanOpenSSLsDefaultMemoryCap() {
        // Why maxmem is passed explicitly: 2^15·r=8 is just over OpenSSL's 32 MiB default.
        #expect(scryptMemoryBytes(n: 1 << 15, r: 8, p: 3)! > 32 << 20)
        #expect(ScryptParameters.default == ScryptParameters(logN: 15, r: 8, p: 3, saltLength: 16, hashLength: 32))
    }

    // MARK: PHC strings

    @Test func hashesIntoThePHCFormatAndVerifies() throws {
        let hasher = PasswordHasher(parameters: Self.low)
        let phc = try hasher.hash(password)
        let fields = phc.split(separator: "$", omittingEmptySubsequences: false)
        #expect(fields.count == 5)
        #expect(fields[1] == "scrypt")
        #expect(fields[2] == "ln=10,r=8,p=1")
        #expect(Base64.decode(fields[3])?.count == 16)
        #expect(Base64.decode(fields[4])?.count == 32)
        #expect(!fields[3].contains("=") && !fields[4].contains("="))
        #expect(hasher.verify(password, against: phc) == .match(needsRehash: false))
    }

    @Test func saltsEveryHash() throws {
        let hasher = PasswordHasher(parameters: Self.low)
        #expect(try hasher.hash(password) != hasher.hash(password))
    }

    @Test func wrongPasswordIsAMismatch() throws {
        let hasher = PasswordHasher(parameters: Self.low)
        let phc = try hasher.hash(password)
        #expect(hasher.verify(Array("correct horse battery stapl".utf8), against: phc) == .mismatch)
        #expect(hasher.verify([], against: phc) == .mismatch)
    }

    @Test func verifiesAHashFromOutsideThisClass() throws {
        // Built from the RFC 7914 vector, truncated to the 32 bytes we store, so the format is pinned down.
        let salt = Array("NaCl-NaCl-NaCl!!".utf8)
        let hash = try scrypt(password: Array("password".utf8), salt: salt, n: 1024, r: 8, p: 1, length: 32)
        let phc = "$scrypt$ln=10,r=8,p=1$\(Base64.encode(salt))$\(Base64.encode(hash))"
        #expect(phc.hasPrefix("$scrypt$ln=10,r=8,p=1$TmFDbC1OYUNsLU5hQ2whIQ$"))
        let hasher = PasswordHasher(parameters: Self.low)
        #expect(hasher.verify(Array("password".utf8), against: phc) == .match(needsRehash: false))
        let padded = "$scrypt$ln=10,r=8,p=1$\(Base64.encode(salt, padded: true))$\(Base64.encode(hash, padded: true))"
        #expect(hasher.verify(Array("password".utf8), against: padded) == .match(needsRehash: false))
    }

    @Test func olderParametersAskForARehash() throws {
        let phc = try PasswordHasher(parameters: Self.low).hash(password)
        let upgraded = PasswordHasher(parameters: Self.higher)
        #expect(upgraded.verify(password, against: phc) == .match(needsRehash: true))
        #expect(upgraded.verify(Array("wrong".utf8), against: phc) == .mismatch)
        let rehashed = try upgraded.hash(password)
        #expect(rehashed.hasPrefix("$scrypt$ln=11,r=8,p=1$"))
        #expect(upgraded.verify(password, against: rehashed) == .match(needsRehash: false))
    }

    @Test func otherSaltOrHashLengthsAlsoAskForARehash() throws {
        let longer = ScryptParameters(logN: 10, r: 8, p: 1, saltLength: 32, hashLength: 64)!
        let phc = try PasswordHasher(parameters: longer).hash(password)
        #expect(PasswordHasher(parameters: Self.low).verify(password, against: phc) == .match(needsRehash: true))
    }

    @Test(arguments: [
        "", "$", "$scrypt$", "scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$aGFzaA", "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0",
        "$argon2id$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$r=8,ln=10,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=010,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=+10,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=١٠,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=0,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=20,r=32,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=99999999,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8,p=0$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8,p=1$c2FsdA$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
        "$scrypt$ln=10,r=8,p=1$c2Fs*HNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY$",
        "$scrypt$ln=10,r=8,p=1,x=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
        "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"
            + String(repeating: "A", count: 300),
    ])
    func malformedStoredStringsAreMismatches(_ phc: String) throws {
        #expect(PasswordHasher(parameters: Self.low).verify(password, against: phc) == .mismatch)
    }

    @Test func tamperedHashIsAMismatch() throws {
        let hasher = PasswordHasher(parameters: Self.low)
        var phc = Array(try hasher.hash(password).utf8)
        phc[phc.count - 3] = phc[phc.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(hasher.verify(password, against: String(decoding: phc, as: UTF8.self)) == .mismatch)
    }

    @Test func verifyingAgainstTheDummyIsAlwaysAMismatch() throws {
        let hasher = PasswordHasher(parameters: Self.low)
        #expect(hasher.verifyAgainstDummy(password) == .mismatch)
        #expect(hasher.verifyAgainstDummy([]) == .mismatch)
    }

    @Test func checkResultsExposeMatchAndRehash() {
        #expect(PasswordCheck.match(needsRehash: true).isMatch && PasswordCheck.match(needsRehash: true).needsRehash)
        #expect(PasswordCheck.match(needsRehash: false).isMatch && !PasswordCheck.match(needsRehash: false).needsRehash)
        #expect(!PasswordCheck.mismatch.isMatch && !PasswordCheck.mismatch.needsRehash)
    }

    @Test func parametersOutsideTheSupportedRangeAreRefused() {
        #expect(ScryptParameters(logN: 0, r: 8, p: 1) == nil)
        #expect(ScryptParameters(logN: 21, r: 8, p: 1) == nil)
        #expect(ScryptParameters(logN: 20, r: 8, p: 1) == nil)  // 1 GiB
        #expect(ScryptParameters(logN: 17, r: 8, p: 1) != nil)  // 128 MiB
        #expect(ScryptParameters(logN: 10, r: 8, p: 1, saltLength: 4) == nil)
        #expect(ScryptParameters(logN: 10, r: 8, p: 1, hashLength: 8) == nil)
    }
}
