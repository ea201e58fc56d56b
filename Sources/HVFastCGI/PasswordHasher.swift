/// The cost of one scrypt hash, and the salt and hash lengths stored with it.
///
/// The default, N=2^15, r=8, p=3, is one of OWASP's equivalent scrypt settings. It is chosen over N=2^17, r=8, p=1
/// because it needs 32 MiB per hash instead of 128 MiB: every worker process may be in a login at the same time, and
/// 4 workers per core × 128 MiB would be most of a small host's memory. The time is similar: 0.24 s per hash
/// measured here for the default, ≈ 0.3–0.4 s for N=2^17.
struct ScryptParameters: Sendable, Equatable {
    /// log2 of N, the CPU/memory cost.
    let logN: Int
    /// Block size.
    let r: Int
    /// Parallelism (run sequentially by OpenSSL: it multiplies time, not memory).
    let p: Int
    let saltLength: Int
    let hashLength: Int

    /// Anything needing more memory than this is refused, so a tampered stored hash cannot exhaust a worker.
    static let maximumMemoryBytes: UInt64 = 256 << 20

    static let `default` = ScryptParameters(unchecked: 15, r: 8, p: 3, saltLength: 16, hashLength: 32)

    /// Creates a parameter set, or returns nil if it is outside what this service will run: logN 1…20, r 1…32,
    /// p 1…16, salt 8…64 bytes, hash 16…64 bytes, and at most `maximumMemoryBytes`.
    ///
    /// Production uses `default`; lower values exist so tests can hash quickly.
    init?(logN: Int, r: Int, p: Int, saltLength: Int = 16, hashLength: Int = 32) {
        guard (1...20).contains(logN), (1...32).contains(r), (1...16).contains(p), (8...64).contains(saltLength),
            (16...64).contains(hashLength),
            let memory = scryptMemoryBytes(n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p)),
            memory <= Self.maximumMemoryBytes
        else { return nil }
        self.init(unchecked: logN, r: r, p: p, saltLength: saltLength, hashLength: hashLength)
    }

    private init(unchecked logN: Int, r: Int, p: Int, saltLength: Int, hashLength: Int) {
        self.logN = logN
        self.r = r
        self.p = p
        self.saltLength = saltLength
        self.hashLength = hashLength
    }
}

/// The outcome of checking a password against a stored hash.
enum PasswordCheck: Sendable, Equatable {
    /// The password is right. If `needsRehash`, the stored hash used other parameters (cost, salt or hash length)
    /// than the current ones: hash the password again and store the result.
    case match(needsRehash: Bool)
    /// The password is wrong, the stored string is not a hash this service can read, or OpenSSL failed.
    case mismatch

    var isMatch: Bool {
        if case .match = self { true } else { false }
    }

    var needsRehash: Bool {
        if case .match(needsRehash: true) = self { true } else { false }
    }
}

/// Hashes passwords with scrypt into PHC strings and checks them.
///
/// The stored format is the PHC string format as passlib writes scrypt:
/// `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>`, salt and hash in standard base64 without padding. The
/// parameters travel with the hash, so raising them later only needs a rehash at the next login.
struct PasswordHasher: Sendable {
    let parameters: ScryptParameters

    init(parameters: ScryptParameters = .default) {
        self.parameters = parameters
    }

    /// Hashes `password` with a fresh random salt and the current parameters.
    ///
    /// Throws `CryptoError` if the random generator or scrypt fails (e.g. the 32 MiB cannot be allocated).
    func hash(_ password: [UInt8]) throws(CryptoError) -> String {
        let salt = try secureRandomBytes(count: parameters.saltLength)
        let derived = try derive(password, salt: salt, parameters: parameters)
        return Self.format(parameters: parameters, salt: salt, hash: derived)
    }

    /// Checks `password` against the PHC string `phc`.
    ///
    /// A malformed or unsupported stored string is a `.mismatch` (after the same work as a real check, so it
    /// reveals nothing by timing), never a crash. If OpenSSL fails (scrypt cannot allocate its memory) the check
    /// fails closed, also as `.mismatch`.
    func verify(_ password: [UInt8], against phc: String) -> PasswordCheck {
        guard let stored = Self.parse(phc) else { return verifyAgainstDummy(password) }
        guard let derived = try? derive(password, salt: stored.salt, parameters: stored.parameters),
            constantTimeEquals(derived, stored.hash)
        else { return .mismatch }
        return .match(needsRehash: stored.parameters != parameters)
    }

    /// Does the work of a password check at the current parameters and returns `.mismatch`.
    ///
    /// Login calls this when the username is unknown, so that an unknown user and a wrong password take the same
    /// time (as long as stored hashes use the current parameters).
    @discardableResult
    func verifyAgainstDummy(_ password: [UInt8]) -> PasswordCheck {
        let salt = [UInt8](repeating: 0, count: parameters.saltLength)
        let derived = (try? derive(password, salt: salt, parameters: parameters)) ?? []
        // Compare as a real check would. Even if the derived key were the all-zero target, this is a mismatch.
        _ = constantTimeEquals(derived, [UInt8](repeating: 0, count: parameters.hashLength))
        return .mismatch
    }

    private func derive(_ password: [UInt8], salt: [UInt8], parameters: ScryptParameters) throws(CryptoError)
        -> [UInt8]
    {
        try scrypt(
            password: password, salt: salt, n: 1 << UInt64(parameters.logN), r: UInt64(parameters.r),
            p: UInt64(parameters.p), length: parameters.hashLength)
    }

    /// Writes `$scrypt$ln=…,r=…,p=…$salt$hash`.
    static func format(parameters: ScryptParameters, salt: [UInt8], hash: [UInt8]) -> String {
        let settings = "ln=\(parameters.logN),r=\(parameters.r),p=\(parameters.p)"
        return "$scrypt$\(settings)$\(Base64.encode(salt))$\(Base64.encode(hash))"
    }

    /// Reads a PHC scrypt string, or returns nil if it is not exactly one this hasher could have written (parameters
    /// in order, decimal without leading zeros, within `ScryptParameters`' bounds).
    static func parse(_ phc: String) -> (parameters: ScryptParameters, salt: [UInt8], hash: [UInt8])? {
        guard phc.utf8.count <= 256 else { return nil }
        let fields = phc.split(separator: "$", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0].isEmpty, fields[1] == "scrypt" else { return nil }
        let settings = fields[2].split(separator: ",", omittingEmptySubsequences: false)
        guard settings.count == 3,
            let logN = decimal(settings[0], named: "ln"),
            let r = decimal(settings[1], named: "r"),
            let p = decimal(settings[2], named: "p"),
            let salt = Base64.decode(fields[3]),
            let hash = Base64.decode(fields[4]),
            let parameters = ScryptParameters(logN: logN, r: r, p: p, saltLength: salt.count, hashLength: hash.count)
        else { return nil }
        return (parameters, salt, hash)
    }

    /// Parses `name=value` where value is a canonical decimal of at most 6 digits.
    private static func decimal(_ setting: Substring, named name: String) -> Int? {
        guard setting.hasPrefix(name + "=") else { return nil }
        let digits = setting.dropFirst(name.count + 1)
        guard (1...6).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }),
            digits.count == 1 || digits.first != "0"
        else { return nil }
        return Int(digits)
    }
}
