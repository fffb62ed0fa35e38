import Foundation

/// What a job ended as. Written to `result.json` in the result folder.
public struct JobResult: Sendable, Codable, Equatable {
    /// The job's final state.
    public enum State: String, Sendable, Codable {
        /// The command ran and exited 0.
        case succeeded
        /// The command exited non-zero or died of a signal, or Airlock could not run it.
        case failed
        /// The command ran past its timeout and was killed.
        case timedOut = "timed_out"
        /// The user stopped the job.
        case canceled
        /// The process running the job died and the job was not run again
        /// (jobs in the store only).
        case lost
    }

    /// How long each phase took, in seconds.
    public struct Phases: Sendable, Codable, Equatable {
        public var define: Double?
        public var bootToSSH: Double?
        public var upload: Double?
        public var run: Double?
        public var collect: Double?
        public var destroy: Double?
        public var total: Double?
    }

    public var jobID: String
    public var state: State
    /// Which attempt this was, for jobs run from the store (1 for the first).
    public var attempt: Int?
    /// The command's exit code, when it exited.
    public var exitCode: Int32?
    /// The signal that ended the command (e.g. "KILL"), when it died of one.
    public var signal: String?
    /// Why the job failed, when Airlock could not run it or stopped it.
    public var error: String?
    /// The class of that failure (`guestFailed`, `hostUnavailable`, ...).
    public var errorCode: String?
    /// How to fix that failure, when known.
    public var hint: String?
    public var image: String
    public var host: String
    public var accelerator: String?
    /// The port on 127.0.0.1 that was forwarded to the guest's SSH.
    public var sshPort: Int?
    /// How the guest's QEMU process was confined (local hosts only).
    public var qemu: QEMUConfinement?
    public var phases = Phases()
    public var startedAt: Date
    public var finishedAt: Date?
    public var stdoutBytes: Int64 = 0
    public var stderrBytes: Int64 = 0
    public var stdoutTruncated = false
    public var stderrTruncated = false
    public var collected: CollectReport?
    /// The limits the job ran under, and those it ran into.
    public var limits: JobLimits?
    public var limitsHit: [LimitHit]?
    /// What the guest could reach, and what Airlock carried for it.
    public var egress: EgressReport?
    /// Bytes of the image sent to the job's remote host, when the host
    /// did not hold it yet (0: it did).
    public var imageUploadBytes: Int64?

    /// The exit code `airlock run` reports for this result.
    public var processExitCode: Int32 {
        switch state {
        case .succeeded: return 0
        case .timedOut: return ExitCode.timedOut
        case .canceled: return ExitCode.canceled
        case .lost: return ExitCode.jobFailed
        case .failed:
            // Airlock's own failure wins over the command's code, which stays in result.json.
            if let errorCode {
                return errorCode == AirlockError.Code.hostUnavailable.description
                    ? ExitCode.hostUnavailable : ExitCode.jobFailed
            }
            // A code that does not fit an exit status (a forged one) still reads as a failure.
            if let exitCode { return (1...255).contains(exitCode) ? exitCode : 255 }
            if let signal { return 128 + (Signals.number(of: signal) ?? 0) }
            return ExitCode.jobFailed
        }
    }
}

extension JobResult {
    /// Why the job ended as it did, in words; nil when it succeeded.
    public var reason: String? {
        switch state {
        case .succeeded: return nil
        case .failed:
            if let error { return error }
            if let exitCode { return "command exited with status \(exitCode)" }
            if let signal { return "command killed by signal \(signal)" }
            return "unknown error"
        case .timedOut, .lost: return error
        case .canceled: return error ?? "canceled"
        }
    }

    /// Whether the job failed for reasons of the machinery rather than the
    /// workload, so that running it again may well succeed: the guest never
    /// came up or SSH failed before the command started, or libvirt failed.
    ///
    /// - Parameter commandStarted: Whether the command had been started.
    /// - Returns: true for a failure worth another attempt.
    public func isInfrastructureFailure(commandStarted: Bool) -> Bool {
        guard state == .failed, let errorCode else { return false }
        switch errorCode {
        case AirlockError.Code.hostUnavailable.description:
            return true
        case AirlockError.Code.guestFailed.description, AirlockError.Code.connectionLost.description:
            // Once the command runs, the guest is the workload's: it may
            // have stopped its own SSH server or network, and is not run again.
            return !commandStarted
        default:
            return false
        }
    }
}

/// The process exit codes Airlock uses for its own outcomes. Workload exit
/// codes pass through; a death by signal N is 128+N.
public enum ExitCode {
    public static let usage: Int32 = 64
    public static let imageInvalid: Int32 = 66
    public static let hostUnavailable: Int32 = 69
    public static let internalError: Int32 = 70
    /// Not now: jobs are unfinished, or a thing is in use.
    public static let tryLater: Int32 = 75
    public static let timedOut: Int32 = 124
    public static let jobFailed: Int32 = 125
    public static let canceled: Int32 = 130
}

/// Signal names as SSH sends them (without "SIG") and their Linux numbers.
public enum Signals {
    static let table: [String: Int32] = [
        "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
        "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
        "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
        "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
    ]

    /// The name of a Linux signal number, without "SIG".
    public static func name(of number: Int32) -> String? {
        table.first { $0.value == number }?.key
    }

    /// The Linux number of a signal name, with or without "SIG".
    public static func number(of name: String) -> Int32? {
        let bare = name.hasPrefix("SIG") ? String(name.dropFirst(3)) : name
        return table[bare.uppercased()]
    }
}
