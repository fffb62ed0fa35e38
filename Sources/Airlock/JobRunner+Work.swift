import AirlockLog
import Archive
import Foundation
import Libvirt
import SSH

// MARK: - Work: upload, run, collect

extension JobRunner {
    /// Upload, run, collect.
    func work(
        in guest: Guest, image: Image, secrets: [(String, String)], result: inout JobResult, stats: inout GuestStats
    ) throws {
        guard let session = guest.session else { return }
        onPhase(.running)

        let uploadStart = ContinuousClock.now
        try upload(session)
        result.phases.upload = seconds(since: uploadStart)
        logger.debug("workload pushed", metadata: ["phase.seconds": "\(result.phases.upload ?? 0)"])

        // Allowed endpoints are served only while the command runs.
        let relay = try startRelay(guest, image: image)
        let runStart = ContinuousClock.now
        do {
            defer {
                if let relay { result.egress = relay.stop() }
            }
            try runCommand(session, guest: guest, secrets: secrets, result: &result)
        }
        result.phases.run = seconds(since: runStart)
        logger.debug("command ended", metadata: ["job.state": result.state.rawValue])

        if result.state == .canceled { return }
        onPhase(.collecting)
        let collectStart = ContinuousClock.now
        var report = CollectReport()
        do {
            try collect(session, into: &report, stats: &stats)
        } catch {
            // The command's own outcome stays in result.json; the job fails (exit 125).
            result.state = .failed
            result.errorCode = AirlockError.Code.guestFailed.description
            result.error = "collecting results from guest '\(guest.domain.name)' failed: \(describe(error))"
            if hostGone(guest) {
                result.errorCode = AirlockError.Code.hostUnavailable.description
                result.error = "lost host '\(spec.connectURI)' while results were collected: \(describe(error))"
            }
        }
        result.collected = report
        // A cancel may surface as a failed read, or not at all (data kept flowing).
        if isCancelled {
            result.state = .canceled
            result.errorCode = AirlockError.Code.cancelled.description
            result.error = result.error ?? "canceled while results were collected"
        }
        result.phases.collect = seconds(since: collectStart)
    }

    func upload(_ session: Session) throws {
        let deadline = ContinuousClock.now + spec.transferTimeout
        let channel = try session.exec(
            GuestScript.unpack() + " && find . -print0 | tr -dc '\\000' | wc -c", deadline: deadline)
        defer { channel.free() }
        let entries: Int
        if let snapshot = spec.workloadSnapshot {
            try snapshot.stream { bytes in try channel.write(bytes, deadline: deadline) }
            entries = snapshot.entries
        } else {
            let writer = try TarWriter { bytes in
                try channel.write(bytes, deadline: deadline)
            }
            entries = try writer.appendContents(of: spec.workload)
            try writer.finish()
        }
        try channel.sendEOF(deadline: deadline)

        var answer = [UInt8]()
        var errors = [UInt8]()
        let status = try channel.drain(deadline: deadline) { stream, bytes in
            if stream == .stdout { answer += bytes.prefix(64) } else { errors += bytes.prefix(4096) }
        }
        guard status == .exited(0) else {
            throw AirlockError(
                .guestFailed,
                "unpacking the workload in the guest failed (\(status)): "
                    + Terminal.escape(String(decoding: errors, as: UTF8.self)))
        }
        // The guest counts what it unpacked, "." included; anything missing is an error, never a silent loss.
        let answered = String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard Int(answered) == entries + 1 else {
            throw AirlockError(
                .guestFailed,
                "the guest counted '\(Terminal.escape(String(answered.prefix(20))))' workload entries with '.'; "
                    + "\(entries) were sent, so \(entries + 1) were expected")
        }
    }

    /// Opens the relay's own SSH session and has the guest listen for each
    /// allowed endpoint; nil when the job allows none.
    func startRelay(_ guest: Guest, image: Image) throws -> EgressRelay? {
        guard case .allow = spec.egress else { return nil }
        let relayInterrupt = Interrupt()
        let deadline = ContinuousClock.now + .seconds(30)
        let session = try openSession(guest, image: image, deadline: deadline, interrupt: relayInterrupt)
        let relay = EgressRelay(session: session, interrupt: relayInterrupt, egress: spec.egress, logger: logger)
        do {
            try relay.listen(deadline: deadline)
        } catch {
            _ = relay.stop()
            throw error
        }
        relay.start()
        logger.debug("egress relay started", metadata: ["egress": "\(spec.egress)"])
        return relay
    }

    func runCommand(
        _ session: Session, guest: Guest, secrets: [(String, String)], result: inout JobResult
    ) throws {
        let stdoutFile = try OutputFile(url: resultsFolder.appendingPathComponent("stdout"), limit: spec.maxOutputBytes)
        let stderrFile = try OutputFile(url: resultsFolder.appendingPathComponent("stderr"), limit: spec.maxOutputBytes)
        defer {
            result.stdoutBytes = stdoutFile.received
            result.stderrBytes = stderrFile.received
            result.stdoutTruncated = stdoutFile.truncated
            result.stderrTruncated = stderrFile.truncated
        }

        let script = GuestScript.run(
            command: spec.command, environment: spec.environment, maxProcesses: spec.maxProcesses,
            hostAliases: spec.egress.endpoints.filter(\.hostIsName).map(\.host), readsSecrets: !secrets.isEmpty)
        let channel = try session.exec(script, deadline: nil)
        defer { channel.free() }
        commandStarted = true
        // Secrets go on the command's standard input, over the encrypted channel only;
        // then the input ends, so that a command reading it is not left waiting.
        // A command that is already gone, or a connection that broke, shows in the drain below.
        let inputDeadline = ContinuousClock.now + .seconds(60)
        if !secrets.isEmpty {
            try? Data(GuestScript.secretLines(secrets).utf8).withUnsafeBytes {
                try channel.write($0, deadline: inputDeadline)
            }
        }
        try? channel.sendEOF(deadline: inputDeadline)
        let deadline = ContinuousClock.now + spec.timeout
        let sink: (Channel.Stream, UnsafeRawBufferPointer) throws -> Void = { [output] stream, bytes in
            switch stream {
            case .stdout:
                stdoutFile.append(bytes)
                output(.stdout, bytes)
            case .stderr:
                stderrFile.append(bytes)
                output(.stderr, bytes)
            }
        }

        let status: CommandExit
        do {
            status = try channel.drain(deadline: deadline, output: sink)
        } catch let error as SSHError where error.kind == .timeout {
            logger.debug("timeout reached, killing the job command")
            killJob(session)
            // The killed command's last output and its exit still come through.
            _ = try? channel.drain(deadline: .now + .seconds(5), output: sink)
            result.state = .timedOut
            result.error = "the command ran past its timeout of \(Durations.format(spec.timeout)) and was killed"
            return
        } catch let error as SSHError where error.kind == .interrupted && hostDiskFull {
            throw diskFullError(guest.domain.name)
        } catch let error as SSHError where error.kind == .interrupted {
            result.state = .canceled
            result.error = "canceled while the command ran"
            return
        } catch let error as SSHError {
            throw lostGuest(guest, error)
        }

        switch status {
        case .exited(let code):
            result.exitCode = code
            result.state = code == 0 ? .succeeded : .failed
        case .signaled(let name):
            result.signal = name
            result.state = .failed
        }
    }

    func killJob(_ session: Session) {
        guard let channel = try? session.exec(GuestScript.killJob(), deadline: .now + .seconds(5)) else { return }
        _ = try? channel.drain(deadline: .now + .seconds(5)) { _, _ in }
        channel.free()
    }

    func lostGuest(_ guest: Guest, _ error: SSHError) -> Error {
        // A remote host that went away took the guest with it: the host failed, not the workload.
        if hostGone(guest) {
            return AirlockError(
                .hostUnavailable, "lost host '\(spec.connectURI)' while its guest '\(guest.domain.name)' ran",
                cause: error)
        }
        var state = "gone"
        if let current = try? guest.domain.state() {
            state = current.description
        }
        if guest.console.hasEnded || state != "running" {
            let kernel = guest.console.kernelFailure.map { "; the kernel said: \($0)" } ?? ""
            return AirlockError(
                .guestFailed,
                "guest '\(guest.domain.name)' stopped while the command ran (state: \(state))\(kernel); "
                    + "last console lines:\n" + guest.console.tail(lines: 10),
                cause: error)
        }
        return AirlockError(.connectionLost, "connection to guest '\(guest.domain.name)' lost", cause: error)
    }

    func collect(_ session: Session, into report: inout CollectReport, stats: inout GuestStats) throws {
        let deadline = ContinuousClock.now + spec.transferTimeout
        let channel = try session.exec(
            GuestScript.pack(folder: spec.collectPath, maxFileBytes: spec.collectLimits.maxBytes), deadline: deadline)
        defer { channel.free() }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
        defer { scratch.deallocate() }
        var errors = [UInt8]()
        // The whole stream is bounded too: headers, names and link targets of
        // entries that are skipped cost transfer time without counting as files.
        let streamLimit = spec.collectLimits.maxBytes.addingClamped(256 << 20)
        var streamed: Int64 = 0
        let reader = try TarReader { buffer in
            while true {
                try session.checkpoint(deadline: deadline)
                switch try channel.read(.stdout, into: buffer) {
                case .data(let count):
                    streamed += Int64(count)
                    guard streamed <= streamLimit else {
                        throw AirlockError(
                            .guestFailed, "the guest sent more than \(Sizes.format(streamLimit)) of result stream")
                    }
                    return count
                case .end: return 0
                case .wouldBlock:
                    // Keep stderr flowing too, or a chatty guest could stall the stream.
                    if case .data(let count) = try channel.read(.stderr, into: scratch) {
                        if errors.count < 65536 {
                            errors += UnsafeRawBufferPointer(rebasing: scratch[0..<count]).prefix(65536 - errors.count)
                        }
                        continue
                    }
                    try channel.wait(deadline: deadline)
                }
            }
        }
        // What the guest said on stderr counts even when collection fails.
        defer {
            // What already arrived on stderr counts, even when the collection stopped early.
            while errors.count < 65536, case .data(let count)? = try? channel.read(.stderr, into: scratch) {
                errors += UnsafeRawBufferPointer(rebasing: scratch[0..<count]).prefix(65536 - errors.count)
            }
            let lines = String(decoding: errors, as: UTF8.self).split(separator: "\n").prefix(1000)
            report.note(refusedInGuest(lines))
            report.folderMissing = lines.prefix(4).contains("missing")
            stats = GuestStats(lines: Array(lines.prefix(4)))
        }
        try Collector(limits: spec.collectLimits) { try session.checkpoint(deadline: deadline) }.collect(
            from: reader, into: resultsFolder.appendingPathComponent("out"), report: &report)
        if report.limitReached == nil {
            let status = try channel.drain(deadline: min(deadline, .now + .seconds(30))) { _, _ in }
            if status != .exited(0) {
                logger.info(
                    "guest tar reported trouble while packing results",
                    metadata: [
                        "status": "\(status)", "stderr": Terminal.escape(String(decoding: errors, as: UTF8.self)),
                    ])
            }
        }
    }

    /// The files the guest left out for being over the limit, from its
    /// `refused SIZE NAME` lines.
    func refusedInGuest(_ lines: ArraySlice<Substring>) -> [CollectReport.Skipped] {
        let limit = Sizes.format(spec.collectLimits.maxBytes)
        return lines.compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "refused", let size = Int64(parts[1]) else { return nil }
            let name = parts[2].hasPrefix("./") ? parts[2].dropFirst(2) : parts[2]
            return CollectReport.Skipped(
                path: Terminal.escape(String(name)), reason: "result exceeds limit (\(Sizes.format(size)) > \(limit))")
        }
    }
}

/// One output stream's file in the result folder, keeping at most `limit` bytes.
private final class OutputFile {
    private let handle: Int32
    private let limit: Int64
    private(set) var received: Int64 = 0
    private(set) var truncated = false

    init(url: URL, limit: Int64) throws {
        handle = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard handle >= 0 else {
            throw AirlockError(.internalError, "cannot create '\(url.path)'", cause: POSIXFailure())
        }
        self.limit = limit
    }

    deinit {
        close(handle)
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        let room = max(0, limit - received)
        received += Int64(bytes.count)
        let keep = Int(min(Int64(bytes.count), room))
        if keep < bytes.count {
            truncated = true
        }
        _ = writeAll(handle, UnsafeRawBufferPointer(rebasing: bytes[0..<keep]))
    }
}
