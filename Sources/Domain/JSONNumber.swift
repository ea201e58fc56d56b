/// Exact conversions between the raw text of JSON numbers and the integers the service stores.
///
/// Working on the text, never through `Double`, keeps every accepted value exact (`0.1` CPU is exactly 100
/// millicores) and lets out-of-range input such as `1e400` be refused instead of rounded. The text follows the JSON
/// grammar (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`); integral values are accepted in any form (`2.0`,
/// `2e3`), as pydantic accepts them for integer fields.
public enum JSONNumber {
    /// CPU amounts: a non-negative number of CPUs with at most 3 decimals, as integer millicores (`"1.5"` is 1500).
    ///
    /// Throws `invalidNumber`, `tooManyDecimalPlaces`, `lessThanMinimum` or `greaterThanMaximum`.
    public static func millicores(_ text: String) throws(ValidationError) -> Int64 {
        guard let number = DecimalText(text) else { throw .invalidNumber }
        switch number.integer(scale: 3) {
        case .fractional: throw .tooManyDecimalPlaces(maximum: 3)
        case _ where number.isNegative && !number.isZero: throw .lessThanMinimum("0")
        case .exact(let magnitude) where magnitude <= Int64.max.magnitude: return Int64(magnitude)
        case .exact, .tooLarge: throw .greaterThanMaximum(Self.text(millicores: .max))
        }
    }

    /// RAM and GPU amounts: a non-negative integer that fits in `Int64`.
    ///
    /// Throws `invalidInteger`, `fractionalInteger`, `lessThanMinimum` or `greaterThanMaximum`.
    public static func nonNegativeInt64(_ text: String) throws(ValidationError) -> Int64 {
        let number = try integer(text)
        switch number.integer(scale: 0) {
        case _ where number.isNegative && !number.isZero: throw .lessThanMinimum("0")
        case .exact(let magnitude) where magnitude <= Int64.max.magnitude: return Int64(magnitude)
        default: throw .greaterThanMaximum("\(Int64.max)")
        }
    }

    /// Priorities: any integer that fits in `Int32`, negative ones included.
    ///
    /// Throws `invalidInteger`, `fractionalInteger`, `lessThanMinimum` or `greaterThanMaximum`.
    public static func int32(_ text: String) throws(ValidationError) -> Int32 {
        let number = try integer(text)
        let limit = number.isNegative ? Int32.min.magnitude : UInt32(Int32.max)
        guard case .exact(let magnitude) = number.integer(scale: 0), magnitude <= limit else {
            throw number.isNegative ? .lessThanMinimum("\(Int32.min)") : .greaterThanMaximum("\(Int32.max)")
        }
        return Int32(number.isNegative ? -Int64(magnitude) : Int64(magnitude))
    }

    /// The JSON number text of a CPU amount in millicores, always with a fractional part as FastAPI returned floats:
    /// 35000 is `"35.0"`, 1500 is `"1.5"`, 125 is `"0.125"`.
    public static func text(millicores: Int64) -> String { text(millicores, decimals: 3) }

    /// The JSON number text of `value / 10^decimals` (`decimals` from 1 to 18), with at least one decimal: 7143 with
    /// 4 decimals is `"0.7143"`, 10000 is `"1.0"`.
    public static func text(_ value: Int64, decimals: Int) -> String {
        var unit: UInt64 = 1
        for _ in 0..<decimals { unit *= 10 }
        let (whole, remainder) = value.magnitude.quotientAndRemainder(dividingBy: unit)
        var (part, digits) = (remainder, decimals)
        while digits > 1 && part % 10 == 0 {
            part /= 10
            digits -= 1
        }
        let fraction = String(part)
        return "\(value < 0 ? "-" : "")\(whole).\(String(repeating: "0", count: digits - fraction.count))\(fraction)"
    }

    /// Parses the text of a number that must be integral.
    private static func integer(_ text: String) throws(ValidationError) -> DecimalText {
        guard let number = DecimalText(text) else { throw .invalidInteger }
        guard number.integer(scale: 0) != .fractional else { throw .fractionalInteger }
        return number
    }
}

/// A JSON number as sign, significant digits and decimal exponent: the value is `±digits × 10^exponent`.
private struct DecimalText {
    var isNegative: Bool
    /// Without leading or trailing zeros; empty for zero.
    var digits: [UInt8]
    var exponent: Int

    /// Parses JSON number text; `nil` if it is not one.
    init?(_ text: String) {
        var bytes = Array(text.utf8)[...]
        isNegative = bytes.first == ascii("-")
        if isNegative { bytes = bytes.dropFirst() }
        let integerPart = bytes.prefix(while: isDigit)
        bytes = bytes.dropFirst(integerPart.count)
        guard !integerPart.isEmpty, integerPart.count == 1 || integerPart.first != ascii("0") else { return nil }
        var fractionPart: ArraySlice<UInt8> = []
        if bytes.first == ascii(".") {
            fractionPart = bytes.dropFirst().prefix(while: isDigit)
            guard !fractionPart.isEmpty else { return nil }
            bytes = bytes.dropFirst(1 + fractionPart.count)
        }
        var writtenExponent = 0
        if bytes.first == ascii("e") || bytes.first == ascii("E") {
            bytes = bytes.dropFirst()
            let isExponentNegative = bytes.first == ascii("-")
            if bytes.first == ascii("-") || bytes.first == ascii("+") { bytes = bytes.dropFirst() }
            let exponentDigits = bytes.prefix(while: isDigit)
            guard !exponentDigits.isEmpty else { return nil }
            bytes = bytes.dropFirst(exponentDigits.count)
            // Saturating: beyond a billion, any non-zero value is out of range or too precise either way.
            for digit in exponentDigits {
                writtenExponent = min(writtenExponent * 10 + Int(digit - ascii("0")), 1 << 30)
            }
            if isExponentNegative { writtenExponent = -writtenExponent }
        }
        guard bytes.isEmpty else { return nil }

        let allDigits = (integerPart + fractionPart).map { $0 - ascii("0") }
        let significant = allDigits.drop { $0 == 0 }
        let trailingZeros = significant.reversed().prefix { $0 == 0 }.count
        digits = Array(significant.dropLast(trailingZeros))
        exponent = writtenExponent - fractionPart.count + trailingZeros
    }

    var isZero: Bool { digits.isEmpty }

    /// How the magnitude times `10^scale` converts to an integer.
    enum Integral: Equatable {
        case exact(UInt64)
        case fractional
        case tooLarge
    }

    func integer(scale: Int) -> Integral {
        guard !isZero else { return .exact(0) }
        let zeros = exponent + scale
        guard zeros >= 0 else { return .fractional }
        guard digits.count + zeros <= 20 else { return .tooLarge }
        var value: UInt64 = 0
        for digit in digits + Array(repeating: 0, count: zeros) {
            let (shifted, overflowShift) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflowAdd) = shifted.addingReportingOverflow(UInt64(digit))
            if overflowShift || overflowAdd { return .tooLarge }
            value = sum
        }
        return .exact(value)
    }
}
