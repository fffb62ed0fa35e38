import Foundation

/// Human byte counts (binary units).
public enum Sizes {
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 || value == value.rounded() {
            return "\(Int64(value.rounded())) \(units[unit])"
        }
        return String(format: "%.1f %@", value, units[unit])
    }

    /// Parses "100", "100K", "512M", "1G", "10MiB" (binary units); a bare
    /// number counts in `defaultUnit` bytes.
    ///
    /// - Returns: nil for anything else, and for values that overflow.
    public static func parse(_ text: String, defaultUnit: Int64 = 1) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard let number = Int64(digits) else { return nil }
        let suffix = trimmed.dropFirst(digits.count).lowercased()
        let scale: Int64
        switch suffix {
        case "": scale = defaultUnit
        case "b": scale = 1
        case "k", "kb", "kib": scale = 1 << 10
        case "m", "mb", "mib": scale = 1 << 20
        case "g", "gb", "gib": scale = 1 << 30
        case "t", "tb", "tib": scale = 1 << 40
        default: return nil
        }
        let (result, overflow) = number.multipliedReportingOverflow(by: scale)
        return overflow ? nil : result
    }
}

/// Durations as people write them: "90", "90s", "10m", "2h", "1h30m", "1.5s", "2d".
public enum Durations {
    /// The longest duration Airlock accepts anywhere: 30 days.
    public static let maximum: Duration = .seconds(30 * 86400)

    /// Parses a duration; a bare number is seconds.
    ///
    /// - Returns: nil for malformed text and for anything above `maximum`.
    ///   Signs are not accepted: a duration is never negative.
    public static func parse(_ text: String) -> Duration? {
        var total = 0.0
        var number = ""
        var sawUnit = false
        for character in text {
            if (character.isASCII && character.isNumber) || character == "." {
                number.append(character)
                continue
            }
            guard let value = Double(number) else { return nil }
            switch character {
            case "s": total += value
            case "m": total += value * 60
            case "h": total += value * 3600
            case "d": total += value * 86400
            default: return nil
            }
            number = ""
            sawUnit = true
        }
        if !number.isEmpty {
            guard let value = Double(number) else { return nil }
            total += value
        } else if !sawUnit {
            return nil
        }
        return seconds(total)
    }

    /// A number of seconds as a duration, or nil when it is not finite or
    /// above `maximum`.
    public static func seconds(_ value: Double) -> Duration? {
        guard value.isFinite, value >= 0, value <= Double(maximum.components.seconds) else { return nil }
        return .milliseconds(Int64((value * 1000).rounded()))
    }

    /// "90 s", "10 min", "1 h 30 min".
    public static func format(_ duration: Duration) -> String {
        let seconds = duration.components.seconds
        if seconds >= 3600 && seconds % 60 == 0 {
            let minutes = (seconds % 3600) / 60
            return minutes == 0 ? "\(seconds / 3600) h" : "\(seconds / 3600) h \(minutes) min"
        }
        return seconds % 60 == 0 && seconds >= 60 ? "\(seconds / 60) min" : "\(seconds) s"
    }
}

extension Duration {
    /// The duration in seconds.
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// The duration in whole milliseconds, rounded down.
    public var inMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
