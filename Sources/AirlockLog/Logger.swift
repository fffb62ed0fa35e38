import Foundation
import Synchronization

/// A small structured logger with swift-log's shape: a value type carrying a
/// label, a level and metadata, writing through a `LogHandler`.
///
/// Core types receive a `Logger` in their initializer and never make one.
public struct Logger: Sendable {
    /// Severity, from most to least verbose (swift-log's seven levels).
    public enum Level: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
        case trace, debug, info, notice, warning, error, critical

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }

        public var description: String {
            switch self {
            case .trace: return "trace"
            case .debug: return "debug"
            case .info: return "info"
            case .notice: return "notice"
            case .warning: return "warning"
            case .error: return "error"
            case .critical: return "critical"
            }
        }
    }

    /// Metadata values are strings; keys are dotted names such as `job.id`.
    public typealias Metadata = [String: String]

    /// Where this logger's records come from, such as `airlock.job`.
    public let label: String
    /// Records below this level are dropped.
    public var logLevel: Level
    /// Attached to every record this logger writes.
    public var metadata: Metadata
    private let handler: any LogHandler

    /// Makes a logger writing to `handler`, or to the bootstrapped handler.
    public init(label: String, level: Level = .info, handler: (any LogHandler)? = nil) {
        self.label = label
        self.logLevel = level
        self.metadata = [:]
        self.handler = handler ?? LoggingSystem.handler
    }

    /// Sets one metadata value on this logger value.
    public subscript(metadataKey key: String) -> String? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes one record if `level` is enabled.
    public func log(_ level: Level, _ message: @autoclosure () -> String, metadata extra: Metadata = [:]) {
        guard level >= logLevel else { return }
        var merged = metadata
        for (key, value) in extra {
            merged[key] = value
        }
        handler.write(LogRecord(date: Date(), level: level, label: label, message: message(), metadata: merged))
    }

    public func trace(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.trace, message(), metadata: metadata)
    }

    public func debug(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.debug, message(), metadata: metadata)
    }

    public func info(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.info, message(), metadata: metadata)
    }

    public func notice(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.notice, message(), metadata: metadata)
    }

    public func warning(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.warning, message(), metadata: metadata)
    }

    public func error(_ message: @autoclosure () -> String, metadata: Metadata = [:]) {
        log(.error, message(), metadata: metadata)
    }
}

/// One log record as handed to a handler.
public struct LogRecord: Sendable {
    public let date: Date
    public let level: Logger.Level
    public let label: String
    public let message: String
    public let metadata: Logger.Metadata
}

/// Receives log records. Handlers must be safe to call from any thread.
public protocol LogHandler: Sendable {
    func write(_ record: LogRecord)
}

/// The process-wide default handler, set once by the executable.
public enum LoggingSystem {
    private static let installed = Mutex<(any LogHandler)?>(nil)

    /// Installs the default handler. Only the first call has an effect; tests never call it.
    public static func bootstrap(_ handler: any LogHandler) {
        installed.withLock { current in
            if current == nil {
                current = handler
            }
        }
    }

    static var handler: any LogHandler {
        installed.withLock { $0 } ?? DiscardingLogHandler()
    }
}

/// Drops every record.
public struct DiscardingLogHandler: LogHandler {
    public init() {}
    public func write(_ record: LogRecord) {}
}
