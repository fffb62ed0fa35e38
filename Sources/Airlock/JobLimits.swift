import Foundation

/// The limits a job ran under, as `result.json` records them.
public struct JobLimits: Sendable, Codable, Equatable {
    public var vcpus: Int
    public var memoryMiB: Int
    /// The root disk's size; nil for images without a disk, or the image's own size.
    public var diskBytes: Int64?
    public var timeoutSeconds: Double
    /// Bytes kept of stdout, and of stderr.
    public var maxOutputBytes: Int64
    public var maxResultBytes: Int64
    public var maxResultFiles: Int
    public var maxProcesses: Int

    init(_ spec: JobSpec) {
        vcpus = spec.vcpus
        memoryMiB = spec.memoryMiB
        diskBytes = spec.diskBytes
        timeoutSeconds = spec.timeout.inSeconds
        maxOutputBytes = spec.maxOutputBytes
        maxResultBytes = spec.collectLimits.maxBytes
        maxResultFiles = spec.collectLimits.maxEntries
        maxProcesses = spec.maxProcesses
    }
}

/// One limit a job ran into, and what it cost.
public struct LimitHit: Sendable, Codable, Equatable {
    /// `timeout`, `stdout`, `stderr`, `memory`, `processes`, `disk`,
    /// `resultBytes` or `resultFiles`.
    public var limit: String
    /// What happened, in words, naming the option that sets the limit.
    public var detail: String
}

/// What the guest said its job cgroup and work folder counted, from the
/// `stat` lines of `GuestScript.stats`. The guest may lie: these only
/// explain an outcome, they never decide one.
struct GuestStats: Equatable {
    /// The command's exit status as the run script saw it (128+N for signal N).
    var exitStatus: Int32?
    var oomKills = 0
    var processLimitHits = 0
    /// The work folder's file system was a disk (not RAM) with almost no free space.
    var diskFull = false

    /// Reads the `stat` lines among the guest's other messages.
    init(lines: [Substring]) {
        for line in lines where line.hasPrefix("stat ") {
            let words = line.split(separator: " ")
            guard words.count >= 3 else { continue }
            switch words[1] {
            case "exit": exitStatus = Int32(words[2]).flatMap { (0...255).contains($0) ? $0 : nil }
            case "oom_kill": oomKills = Int(words[2]) ?? 0
            case "pids_max": processLimitHits = Int(words[2]) ?? 0
            case "disk" where words.count == 6:
                // Type, block size, blocks available, blocks in all. RAM file systems fill memory, not a disk.
                guard !["tmpfs", "ramfs"].contains(words[2]), let size = Int64(words[3]),
                    let available = Int64(words[4])
                else { continue }
                diskFull = size.multipliedReportingOverflow(by: available).partialValue < 4 << 20
            default: continue
            }
        }
    }

    init() {}
}

extension JobResult {
    /// Corrects a command reported as `exited(0)` that the run script saw
    /// end otherwise: an SSH server that cannot name a signal (dropbear,
    /// for SIGBUS or SIGXFSZ, say) sends neither a signal nor an exit
    /// status, which reads as exit 0.
    mutating func reconcileExit(with guest: GuestStats) {
        guard state == .succeeded, exitCode == 0, signal == nil, let status = guest.exitStatus, status != 0 else {
            return
        }
        state = .failed
        if status > 128, let name = Signals.name(of: status - 128) {
            exitCode = nil
            signal = name
        } else {
            exitCode = status
        }
    }

    /// Records every limit the job ran into, from its outcome and the guest's counts.
    mutating func noteLimits(_ spec: JobSpec, guest: GuestStats) {
        var hits: [LimitHit] = []
        if state == .timedOut {
            hits.append(
                LimitHit(
                    limit: "timeout",
                    detail: "the command ran past its timeout of \(Durations.format(spec.timeout)) (--timeout)"))
        }
        for (name, truncated, received) in [
            ("stdout", stdoutTruncated, stdoutBytes), ("stderr", stderrTruncated, stderrBytes),
        ] where truncated {
            hits.append(
                LimitHit(
                    limit: name,
                    detail: "kept the first \(Sizes.format(spec.maxOutputBytes)) of \(Sizes.format(received)) "
                        + "(--max-output)"))
        }
        if guest.oomKills > 0 {
            hits.append(
                LimitHit(
                    limit: "memory",
                    detail: "the guest killed \(guest.oomKills) of the command's processes for want of memory "
                        + "(--memory \(Sizes.format(Int64(spec.memoryMiB) << 20)))"))
        }
        if guest.processLimitHits > 0 {
            hits.append(
                LimitHit(
                    limit: "processes",
                    detail: (guest.processLimitHits == 1
                        ? "1 process start was refused" : "\(guest.processLimitHits) process starts were refused")
                        + " at \(spec.maxProcesses) processes (--max-processes)"))
        }
        if guest.diskFull {
            hits.append(LimitHit(limit: "disk", detail: "the guest's root disk was full (--disk)"))
        }
        if let collected {
            let bytesHit =
                collected.limitReached?.hasSuffix("of files") == true
                || collected.skipped.contains { $0.reason.hasPrefix("result exceeds limit") }
            if bytesHit {
                hits.append(
                    LimitHit(
                        limit: "resultBytes",
                        detail: "results over \(Sizes.format(spec.collectLimits.maxBytes)) were not collected "
                            + "(--max-results)"))
            }
            if collected.limitReached?.hasSuffix("entries") == true {
                hits.append(
                    LimitHit(
                        limit: "resultFiles",
                        detail: "collection stopped after \(spec.collectLimits.maxEntries) entries "
                            + "(--max-result-files)"))
            }
        }
        limitsHit = hits.isEmpty ? nil : hits
    }
}
