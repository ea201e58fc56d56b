extension Validation {
    /// The longest image name, registry included, that registries accept (distribution's `NameTotalLengthMax`).
    public static let maximumImageNameLength = 255

    /// Container image references, per the Docker distribution reference grammar:
    /// `[host[:port]/]path[:tag][@sha256:<64 lowercase hex>]`.
    ///
    /// - `host` is a domain name or IPv4 address (components of letters, digits and inner dashes, separated by `.`)
    ///   or a bracketed IPv6 address; `port` is decimal digits.
    /// - `path` is one or more `/`-separated components of lowercase letters and digits, joined by `.`, `_`, `__` or
    ///   a run of `-`. The name (`host` and `path`) is at most 255 characters.
    /// - `tag` matches `[\w][\w.-]{0,127}`. Only sha256 digests are accepted: it is the only algorithm registries use.
    ///
    /// As in Docker, the first component is the registry only when it contains `.` or `:`, is `localhost` or has an
    /// uppercase letter, and more components follow: `library/ubuntu` is all path.
    /// Throws `invalidImageReference` naming the part that is wrong.
    public static func imageReference(_ value: String) throws(ValidationError) -> String {
        var rest = Array(value.utf8)[...]
        if let at = rest.firstIndex(of: ascii("@")) {
            guard isDigest(rest[(at + 1)...]) else { throw .invalidImageReference(.invalidDigest) }
            rest = rest[..<at]
        }
        if let colon = rest.lastIndex(of: ascii(":")), !rest[colon...].contains(ascii("/")) {
            guard isTag(rest[(colon + 1)...]) else { throw .invalidImageReference(.invalidTag) }
            rest = rest[..<colon]
        }
        guard rest.count <= maximumImageNameLength else { throw .invalidImageReference(.nameTooLong) }
        var components = rest.split(separator: ascii("/"), omittingEmptySubsequences: false)[...]
        if components.count > 1, let first = components.first, looksLikeRegistry(first) {
            guard isRegistry(first) else { throw .invalidImageReference(.invalidRegistry) }
            components = components.dropFirst()
        }
        guard components.allSatisfy(isPathComponent) else { throw .invalidImageReference(.invalidRepository) }
        return value
    }

    private static func isDigest(_ text: ArraySlice<UInt8>) -> Bool {
        let prefix = Array("sha256:".utf8)
        let hex = text.dropFirst(prefix.count)
        return text.starts(with: prefix) && hex.count == 64
            && hex.allSatisfy { isDigit($0) || (ascii("a")...ascii("f")).contains($0) }
    }

    private static func isTag(_ text: ArraySlice<UInt8>) -> Bool {
        guard let first = text.first, isWord(first), text.count <= 128 else { return false }
        return text.allSatisfy { isWord($0) || $0 == ascii(".") || $0 == ascii("-") }
    }

    private static func looksLikeRegistry(_ component: ArraySlice<UInt8>) -> Bool {
        component.contains(ascii(".")) || component.contains(ascii(":")) || component.elementsEqual("localhost".utf8)
            || component.contains { (ascii("A")...ascii("Z")).contains($0) }
    }

    /// `host[:port]`, where host is a domain name, an IPv4 address or `[IPv6]`.
    private static func isRegistry(_ text: ArraySlice<UInt8>) -> Bool {
        let hostEnd: Int
        if text.first == ascii("[") {
            guard let close = text.firstIndex(of: ascii("]")) else { return false }
            hostEnd = close + 1
        } else {
            hostEnd = text.firstIndex(of: ascii(":")) ?? text.endIndex
        }
        let port = text[hostEnd...]
        return isHost(text[..<hostEnd])
            && (port.isEmpty || (port.first == ascii(":") && port.count > 1 && port.dropFirst().allSatisfy(isDigit)))
    }

    private static func isHost(_ text: ArraySlice<UInt8>) -> Bool {
        if text.first == ascii("[") {
            let address = text.dropFirst().dropLast()
            return !address.isEmpty && address.allSatisfy { isHexDigit($0) || $0 == ascii(":") }
        }
        return text.split(separator: ascii("."), omittingEmptySubsequences: false).allSatisfy(isDomainComponent)
    }

    /// `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
    private static func isDomainComponent(_ text: ArraySlice<UInt8>) -> Bool {
        guard let first = text.first, let last = text.last else { return false }
        return isAlphanumeric(first) && isAlphanumeric(last)
            && text.allSatisfy { isAlphanumeric($0) || $0 == ascii("-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    private static func isPathComponent(_ text: ArraySlice<UInt8>) -> Bool {
        guard let first = text.first, isLowerAlphanumeric(first) else { return false }
        var index = text.startIndex
        while index < text.endIndex {
            let separatorStart = text[index...].firstIndex { !isLowerAlphanumeric($0) } ?? text.endIndex
            guard separatorStart < text.endIndex else { return true }
            let separatorEnd = text[separatorStart...].firstIndex(where: isLowerAlphanumeric) ?? text.endIndex
            let separator = text[separatorStart..<separatorEnd]
            let isSeparator =
                separator.elementsEqual(".".utf8) || separator.elementsEqual("_".utf8)
                || separator.elementsEqual("__".utf8) || separator.allSatisfy { $0 == ascii("-") }
            guard isSeparator, separatorEnd < text.endIndex else { return false }
            index = separatorEnd
        }
        return true
    }

    private static func isWord(_ byte: UInt8) -> Bool { isAlphanumeric(byte) || byte == ascii("_") }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        isDigit(byte) || (ascii("a")...ascii("z")).contains(byte)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowerAlphanumeric(byte) || (ascii("A")...ascii("Z")).contains(byte)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (ascii("a")...ascii("f")).contains(byte) || (ascii("A")...ascii("F")).contains(byte)
    }
}

func isDigit(_ byte: UInt8) -> Bool { (ascii("0")...ascii("9")).contains(byte) }

/// The byte of an ASCII character literal.
func ascii(_ character: Unicode.Scalar) -> UInt8 { UInt8(character.value) }
