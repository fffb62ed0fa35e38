import Airlock
import AirlockLog
import Foundation

/// Shared pieces of what the commands print: JSON, tables, times.
enum Rendering {
    /// A JSON object or array, keys sorted, one trailing newline.
    static func json(_ value: Any) -> Data {
        let data =
            (try? JSONSerialization.data(
                withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return data + Data("\n".utf8)
    }

    /// Columns padded to their widest cell; the last column is not padded.
    /// Every cell is escaped: job commands and labels are user text.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let escaped = rows.map { $0.map(Terminal.escape) }
        var widths = header.map(\.count)
        for row in escaped {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        var text = ""
        text.reserveCapacity((rows.count + 1) * (widths.reduce(0, +) + widths.count * 2))
        for row in [header] + escaped {
            for (index, cell) in row.enumerated() {
                if index == row.count - 1 {
                    text += cell
                } else {
                    text += cell + String(repeating: " ", count: widths[index] - cell.count + 2)
                }
            }
            text += "\n"
        }
        return text
    }

    /// "2026-12-04 05:01:02" in local time.
    static func timestamp(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&time, &parts)
        func two(_ number: Int32) -> String { number < 10 ? "0\(number)" : "\(number)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }

    /// "45s", "12m05s", "3h02m".
    static func elapsed(_ seconds: Double) -> String {
        let total = Int(max(0, seconds).rounded())
        if total < 60 { return "\(total)s" }
        if total < 3600 { return String(format: "%dm%02ds", total / 60, total % 60) }
        return String(format: "%dh%02dm", total / 3600, (total % 3600) / 60)
    }

    /// A state with its exit code or reason, as one short phrase.
    static func outcome(_ record: JobStore.Record) -> String {
        switch record.state {
        case .succeeded: return "succeeded"
        case .failed: return record.exitCode.map { "failed (exit \($0))" } ?? "failed"
        default: return record.state.rawValue
        }
    }

    /// A job as a JSON object, for `status --json` and `ls --json`; with
    /// `detailed`, also what it runs (which costs reading its spec).
    static func object(_ record: JobStore.Record, queue: JobQueue, detailed: Bool) -> [String: Any] {
        var object: [String: Any] = [
            "id": record.id, "state": record.state.rawValue, "labels": record.labels, "priority": record.priority,
            "submittedAt": iso8601(record.submitted), "updatedAt": iso8601(record.updated),
            "attempts": record.attempts, "maxAttempts": record.maxAttempts, "results": record.results,
            "vcpus": record.vcpus, "memoryMiB": record.memoryMiB,
        ]
        if detailed {
            let summary = queue.summary(of: record)
            object["image"] = summary.image
            object["command"] = summary.command
            object["workload"] = summary.workload
        }
        object["batch"] = record.batch
        object["host"] = record.host
        object["exitCode"] = record.exitCode.map { Int($0) }
        object["reason"] = record.reason
        return object
    }

    static func iso8601(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
