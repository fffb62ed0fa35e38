import Airlock
import AirlockLog
import Foundation

/// Renders a job result for people (one summary line) or scripts (JSON).
enum ResultRendering {
    /// - Parameters:
    ///   - result: The finished job.
    ///   - folder: Where its results are, as the user should see it.
    ///   - collectPath: The collect folder when the user named it; a missing
    ///     default folder is normal and not worth a line.
    /// - Returns: The lines to print on standard error.
    static func summary(_ result: JobResult, folder: String, collectPath: String?) -> String {
        var outcome: String
        switch result.state {
        case .succeeded: outcome = "succeeded"
        case .failed: outcome = "failed: \(result.reason ?? "unknown error")"
        case .timedOut: outcome = "timed out: \(result.error ?? "")"
        case .canceled: outcome = "canceled"
        case .lost: outcome = "lost: \(result.error ?? "the process running it died")"
        }
        var line = "airlock: job \(result.jobID) \(outcome)"
        if let total = result.phases.total {
            line += String(format: " (%.1f s", total)
            if let accelerator = result.accelerator { line += ", \(accelerator)" }
            line += ")"
        }
        line += "; results in \(folder)"
        if let hint = result.hint {
            line += "\n\(hint)"
        }
        for hit in result.limitsHit ?? [] {
            line += "\nairlock: limit reached: \(hit.limit): \(hit.detail)"
        }
        if let egress = result.egress, egress.failed > 0 {
            line += "\nairlock: egress: \(egress.failed) of \(egress.connections) guest connections were not carried"
            for failure in egress.failures ?? [] {
                line += "\nairlock: egress: \(failure)"
            }
        }
        if let collected = result.collected {
            for skipped in collected.skipped.prefix(10) {
                line += "\nairlock: not collected: '\(skipped.path)': \(skipped.reason)"
            }
            let more = collected.skipped.count + collected.skippedUnlisted - 10
            if more > 0 {
                line += "\nairlock: ... and \(more) more not collected (see result.json)"
            }
            if collected.folderMissing, let collectPath {
                line += "\nairlock: nothing collected: '\(collectPath)' does not exist in the guest"
            }
        }
        return line
    }

    static func json(_ result: JobResult) -> Data {
        JobResultFile.encode(result)
    }
}

/// Raw writes to the process's standard streams.
enum Output {
    static func write(_ bytes: UnsafeRawBufferPointer, to fd: Int32) {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, bytes.baseAddress?.advanced(by: offset), bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
    }

    static func write(_ data: Data, to fd: Int32) {
        data.withUnsafeBytes { write($0, to: fd) }
    }

    /// One line of Airlock's own to stderr, control characters escaped
    /// line by line.
    static func note(_ text: String) {
        let safe = text.split(separator: "\n", omittingEmptySubsequences: false).map { Terminal.escape(String($0)) }
        write(Data((safe.joined(separator: "\n") + "\n").utf8), to: STDERR_FILENO)
    }
}
