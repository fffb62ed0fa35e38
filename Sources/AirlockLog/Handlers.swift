import Foundation
import Synchronization

/// Writes records to standard error: the message alone, or with a timestamp,
/// level and metadata in verbose mode. Control characters are escaped so that
/// nothing a guest supplies can drive the terminal.
public struct StderrLogHandler: LogHandler {
    private let verbose: Bool

    public init(verbose: Bool) {
        self.verbose = verbose
    }

    public func write(_ record: LogRecord) {
        var line: String
        if verbose {
            let stamp = record.date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
            line = "\(stamp) \(record.level) \(record.label): \(record.message)"
            for key in record.metadata.keys.sorted() {
                line += " \(key)=\(record.metadata[key] ?? "")"
            }
        } else {
            let prefix = record.level >= .warning ? "airlock: \(record.level): " : "airlock: "
            line = prefix + record.message
        }
        FileHandle.standardError.write(Data((Terminal.escape(line) + "\n").utf8))
    }
}

/// Keeps records in memory, for tests.
public final class InMemoryLogHandler: LogHandler {
    private let storage = Mutex<[LogRecord]>([])

    public init() {}

    public func write(_ record: LogRecord) {
        storage.withLock { $0.append(record) }
    }

    /// Every record written so far.
    public var records: [LogRecord] { storage.withLock { $0 } }
}

/// Makes untrusted text safe to print on a terminal.
public enum Terminal {
    /// Replaces control characters (C0, DEL, C1) with visible escapes such as `\x1b`.
    public static func escape(_ text: String) -> String {
        // Most text is printable ASCII, which needs no look-up.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) {
            return text
        }
        var out = ""
        out.reserveCapacity(text.count)
        for scalar in text.unicodeScalars {
            let value = scalar.value
            // C0, DEL, C1, and invisible format characters (bidirectional
            // controls, zero-width marks, line separators) that can make a
            // name read differently from what it is.
            let category = scalar.properties.generalCategory
            let invisible = category == .format || category == .lineSeparator || category == .paragraphSeparator
            if value < 0x20 || value == 0x7f || (0x80...0x9f).contains(value) || invisible {
                switch value {
                case 0x0a: out += "\\n"
                case 0x09: out += "\\t"
                case 0x0d: out += "\\r"
                default: out += value > 0xff ? String(format: "\\u{%04x}", value) : String(format: "\\x%02x", value)
                }
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

extension Terminal {
    /// Escapes raw bytes for display: valid UTF-8 is kept (control characters
    /// escaped), other bytes are shown as `\xNN`.
    public static func escapeBytes(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self) {
            return escape(text)
        }
        return bytes.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }
            .joined()
    }
}

/// Makes a guest's byte stream safe for a terminal as it arrives: control
/// bytes other than newline and tab (escape sequences, carriage returns,
/// bells) and the C1 controls U+0080 to U+009F become visible `\xNN`;
/// everything else, invalid UTF-8 included, passes unchanged. It keeps the
/// state a two-byte C1 character split across two chunks needs.
public struct TerminalFilter: Sendable {
    private var pendingC2 = false

    public init() {}

    public mutating func filter(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for byte in bytes {
            if pendingC2 {
                pendingC2 = false
                if (0x80...0x9f).contains(byte) {
                    out += Self.visible(0xc2) + Self.visible(byte)
                    continue
                }
                out.append(0xc2)
            }
            switch byte {
            case 0x0a, 0x09: out.append(byte)
            case 0..<0x20, 0x7f: out += Self.visible(byte)
            case 0xc2: pendingC2 = true
            default: out.append(byte)
            }
        }
        return out
    }

    /// A byte held back at the end of the stream, written as it was.
    public mutating func finish() -> [UInt8] {
        defer { pendingC2 = false }
        return pendingC2 ? [0xc2] : []
    }

    private static func visible(_ byte: UInt8) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        return [UInt8(ascii: "\\"), UInt8(ascii: "x"), digits[Int(byte >> 4)], digits[Int(byte & 0xf)]]
    }
}
