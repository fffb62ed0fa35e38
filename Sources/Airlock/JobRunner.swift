import AirlockLog
import Archive
import Foundation
import Libvirt
import SSH
import Synchronization

/// Which output stream of the job's command a chunk belongs to.
public enum OutputStream: Sendable {
    case stdout, stderr
}

/// Runs one job in one fresh guest, start to finish: make the guest, push the
/// workload, run the command, collect the results, destroy everything.
///
/// `run()` is blocking and is called once, on one thread. `cancel()` may be
/// called from any thread; the job then stops at once and cleans up.
public final class JobRunner: @unchecked Sendable {
    // @unchecked: the mutable guest handles are touched only by the thread in
    // `run()`; `cancel()` and `leftovers()` go through `shared` and
    // `interrupt`, which are thread-safe.
    public let jobID: String
    public let spec: JobSpec
    private let logger: Logger
    private let output: @Sendable (OutputStream, UnsafeRawBufferPointer) -> Void
    private let interrupt = Interrupt()
    private let shared = Mutex<(cancelled: Bool, domain: String?, jobFolder: String?)>((false, nil, nil))

    /// - Parameters:
    ///   - spec: A validated job spec.
    ///   - logger: Receives one debug record per lifecycle step.
    ///   - output: Receives the command's output live, chunk by chunk.
    public init(
        spec: JobSpec, logger: Logger,
        output: @escaping @Sendable (OutputStream, UnsafeRawBufferPointer) -> Void = { _, _ in }
    ) {
        self.jobID = Self.makeJobID()
        self.spec = spec
        var logger = logger
        logger[metadataKey: "job.id"] = jobID
        self.logger = logger
        self.output = output
    }

    /// Asks the job to stop. Waits in progress end at once; the guest and the
    /// job's files are removed by `run()` before it returns.
    public func cancel() {
        shared.withLock { $0.cancelled = true }
        interrupt.fire()
    }

    private var isCancelled: Bool { shared.withLock { $0.cancelled } }

    /// Names of what the job has made and not yet removed.
    public func leftovers() -> [String] {
        shared.withLock { state in
            [state.domain.map { "domain '\($0)'" }, state.jobFolder.map { "folder '\($0)'" }].compactMap { $0 }
        }
    }

    /// The folder the results go to.
    public var resultsFolder: URL {
        spec.resultsFolder ?? URL(fileURLWithPath: "airlock-results").appendingPathComponent(jobID)
    }

    // MARK: - The job

    /// Runs the job.
    ///
    /// - Returns: The result, also written to `result.json`, whatever happened
    ///   once the job had started (failure, timeout, cancel included).
    /// - Throws: `AirlockError` only for problems found before anything was
    ///   made: bad input, an unknown or broken image, an unreachable host.
    public func run() throws(AirlockError) -> JobResult {
        let started = ContinuousClock.now

        // 1. Check everything that can be checked before making anything.
        try spec.validate()
        let image = try spec.catalog.image(named: spec.image)
        guard spec.memoryMiB >= image.minimumMemoryMiB else {
            throw AirlockError(
                .invalidArgument,
                "image '\(image.name)' needs at least \(image.minimumMemoryMiB) MiB of memory, "
                    + "the job asks for \(spec.memoryMiB) MiB",
                hint: "raise --memory")
        }
        let results = resultsFolder
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: results.path), !existing.isEmpty {
            throw AirlockError(
                .exists, "result folder '\(results.path)' already exists and is not empty",
                hint: "choose another folder with --results")
        }
        let connection = try connect()
        defer { connection.close() }
        let plan = try acceleratorPlan(connection)

        // 2. From here on, every path ends in `cleanUp` and writes result.json.
        var result = JobResult(
            jobID: jobID, state: .failed, image: image.name, host: connection.uri, startedAt: Date())
        var guest: Guest?
        do {
            try FileManager.default.createDirectory(at: results, withIntermediateDirectories: true)
            guest = try startGuest(image: image, plan: plan, connection: connection, result: &result)
            if let guest {
                try work(in: guest, image: image, result: &result)
            }
        } catch {
            record(error, guest: guest, into: &result)
        }

        let destroyStart = ContinuousClock.now
        cleanUp(guest)
        result.phases.destroy = seconds(since: destroyStart)
        result.phases.total = seconds(since: started)
        result.finishedAt = Date()
        writeResult(result, to: results)
        return result
    }

    // MARK: - Phases

    /// A started guest and what belongs to it.
    private struct Guest {
        let domain: Domain
        let console: ConsoleWatcher
        let port: Int
        let keys: GuestKeys
        var session: Session?
    }

    private func connect() throws(AirlockError) -> Connection {
        do {
            return try Connection(uri: spec.connectURI)
        } catch {
            throw AirlockError(
                .hostUnavailable, "cannot connect to libvirt at '\(spec.connectURI)'",
                hint: "start libvirtd (as root: 'setsid /usr/sbin/libvirtd -d', or 'systemctl start libvirtd') "
                    + "or pass another URI with --connect",
                cause: error)
        }
    }

    /// The accelerators to try, in order, and whether the first is a probe.
    private struct AcceleratorPlan {
        var first: Accelerator
        var probing: Bool
    }

    private func acceleratorPlan(_ connection: Connection) throws(AirlockError) -> AcceleratorPlan {
        let capabilities: String
        do {
            capabilities = try connection.capabilities()
        } catch {
            throw AirlockError(.hostUnavailable, "cannot read the capabilities of '\(connection.uri)'", cause: error)
        }
        let hasKVM = capabilities.contains("<domain type='kvm'")
        let hasTCG = capabilities.contains("<domain type='qemu'")
        let cache = AcceleratorCache(folder: spec.stateFolder.appendingPathComponent("accel"))
        switch spec.accelerator {
        case .kvm:
            guard hasKVM else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' offers no KVM acceleration",
                    hint: "use --accel tcg (slow emulation) or a host with /dev/kvm")
            }
            return AcceleratorPlan(first: .kvm, probing: false)
        case .tcg:
            guard hasTCG else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' cannot emulate x86_64 guests (no qemu domain type)",
                    hint: "install qemu-system-x86 on the host")
            }
            return AcceleratorPlan(first: .tcg, probing: false)
        case .auto:
            guard hasKVM || hasTCG else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' has no usable acceleration for x86_64 guests",
                    hint: "install qemu-system-x86 on the host and restart libvirtd")
            }
            if let known = cache.lookup(uri: connection.uri) {
                return AcceleratorPlan(first: known, probing: false)
            }
            return hasKVM ? AcceleratorPlan(first: .kvm, probing: true) : AcceleratorPlan(first: .tcg, probing: false)
        }
    }

    /// Creates the guest and waits until its SSH server accepts the job's key.
    private func startGuest(
        image: Image, plan: AcceleratorPlan, connection: Connection, result: inout JobResult
    ) throws -> Guest {
        // QEMU runs as its own user: it may pass through these folders, but
        // not list them; libvirt hands it the key file for the guest's lifetime.
        let runFolder = spec.stateFolder.appendingPathComponent("run")
        let jobFolder = runFolder.appendingPathComponent(jobID)
        try FileManager.default.createDirectory(at: runFolder, withIntermediateDirectories: true)
        _ = chmod(runFolder.path, 0o711)
        try FileManager.default.createDirectory(at: jobFolder, withIntermediateDirectories: false)
        shared.withLock { $0.jobFolder = jobFolder.path }
        _ = chmod(jobFolder.path, 0o711)
        // Lets `airlock gc` tell this job from one whose process died.
        JobOwner.record(in: jobFolder)

        // Fresh keys for this job only: the guest learns both at boot, and
        // the host key is pinned.
        let keys = try GuestKeys.generate()
        let keysFile = jobFolder.appendingPathComponent("keys")
        try keys.write(to: keysFile)

        var accelerator = plan.first
        var probing = plan.probing
        var fellBack = false
        let cache = AcceleratorCache(folder: spec.stateFolder.appendingPathComponent("accel"))
        while true {
            let defineStart = ContinuousClock.now
            var guest: Guest
            do {
                guest = try launch(
                    image: image, accelerator: accelerator, keysFile: keysFile, connection: connection, keys: keys)
            } catch  where probing {
                logger.info(
                    "KVM could not start the guest; falling back to TCG emulation",
                    metadata: ["host.uri": connection.uri, "error": "\(error)"])
                accelerator = .tcg
                probing = false
                fellBack = true
                continue
            }
            result.phases.define = seconds(since: defineStart)
            result.accelerator = accelerator.rawValue
            result.sshPort = guest.port

            let bootStart = ContinuousClock.now
            // A KVM probe gets a short deadline: a working KVM boots this image in a fraction of it.
            let readyDeadline = bootStart + (probing ? .seconds(8) : spec.bootTimeout)
            let ready = guest.console.waitUntilReady(deadline: readyDeadline) { isCancelled }
            if isCancelled {
                destroy(guest)
                throw AirlockError(.cancelled, "job '\(jobID)' was canceled")
            }
            if !ready && probing {
                logger.info(
                    "KVM did not start the guest; falling back to TCG emulation",
                    metadata: ["host.uri": connection.uri])
                destroy(guest)
                accelerator = .tcg
                probing = false
                fellBack = true
                continue
            }
            guard ready else {
                throw bootFailure(guest, deadlinePassed: !guest.console.hasEnded)
            }
            // Remember what auto found, once a guest has really booted on it.
            if spec.accelerator == .auto && (probing || fellBack || cache.lookup(uri: connection.uri) == nil) {
                cache.remember(accelerator, uri: connection.uri)
            }
            logger.debug("guest ready", metadata: ["domain.name": guest.domain.name, "ssh.port": "\(guest.port)"])

            let session = try openSession(guest, deadline: bootStart + spec.bootTimeout)
            guest.session = session
            result.phases.bootToSSH = seconds(since: bootStart)
            logger.debug("SSH up", metadata: ["ssh.port": "\(guest.port)"])
            return guest
        }
    }

    /// Defines and starts the domain (paused until its console is attached),
    /// retrying with another port when the chosen one was taken meanwhile.
    private func launch(
        image: Image, accelerator: Accelerator, keysFile: URL, connection: Connection, keys: GuestKeys
    ) throws -> Guest {
        let name = "airlock-\(jobID)"
        var attempt = 0
        while true {
            attempt += 1
            let port = try PortAllocator.freeLoopbackPort()
            let spec = DomainSpec(
                name: name, jobID: jobID, accelerator: accelerator, vcpus: self.spec.vcpus,
                memoryMiB: self.spec.memoryMiB, kernel: image.kernelURL.path, initrd: image.initrdURL.path,
                cmdline: image.cmdline + " airlock.lifetime=\(lifetimeSeconds)", keysFile: keysFile.path, sshPort: port)
            let domain: Domain
            do {
                shared.withLock { $0.domain = name }
                domain = try connection.createDomain(xml: spec.xml(), paused: true)
            } catch  where error.message.contains("host forwarding") && attempt < 5 {
                logger.info("port taken, retrying with another", metadata: ["ssh.port": "\(port)"])
                continue
            } catch {
                shared.withLock { $0.domain = nil }
                throw AirlockError(
                    .hostUnavailable, "cannot start guest '\(name)' with \(accelerator.rawValue)",
                    hint: accelerator == .kvm ? "KVM does not work on this host; use --accel tcg or --accel auto" : nil,
                    cause: error)
            }
            logger.debug("domain created", metadata: ["domain.name": name, "ssh.port": "\(port)"])

            let console: ConsoleWatcher
            do {
                console = ConsoleWatcher(
                    stream: try domain.openConsole(), logURL: resultsFolder.appendingPathComponent("console.log"))
                console.start()
                try domain.resume()
            } catch {
                _ = try? domain.destroy()
                shared.withLock { $0.domain = nil }
                throw AirlockError(.hostUnavailable, "cannot attach to the console of guest '\(name)'", cause: error)
            }
            return Guest(domain: domain, console: console, port: port, keys: keys)
        }
    }

    /// How long the guest may live at most, even if Airlock itself dies:
    /// boot and command limits plus an hour for transfers. The guest powers
    /// itself off then, and libvirt removes the transient domain.
    private var lifetimeSeconds: Int64 {
        spec.bootTimeout.components.seconds + spec.timeout.components.seconds + 3600
    }

    private func openSession(_ guest: Guest, deadline: ContinuousClock.Instant) throws -> Session {
        do {
            let session = try Session(host: "127.0.0.1", port: guest.port, deadline: deadline, interrupt: interrupt)
            logger.debug("SSH handshake done")
            try session.verifyHostKey(guest.keys.host.publicKeyBlob)
            try session.authenticate(user: "root", key: guest.keys.client, deadline: deadline)
            return session
        } catch {
            switch error.kind {
            case .interrupted:
                throw AirlockError(.cancelled, "job '\(jobID)' was canceled")
            case .hostKeyMismatch:
                throw AirlockError(
                    .guestFailed, "refusing guest '\(guest.domain.name)' on port \(guest.port)", cause: error)
            default:
                throw AirlockError(
                    .guestFailed, "cannot open SSH to guest '\(guest.domain.name)' on port \(guest.port)",
                    cause: error)
            }
        }
    }

    private func bootFailure(_ guest: Guest, deadlinePassed: Bool) -> AirlockError {
        let messages = guest.console.guestMessages
        let tail = guest.console.tail()
        var message =
            deadlinePassed
            ? "guest '\(guest.domain.name)' did not become ready within \(spec.bootTimeout.components.seconds) s"
            : "guest '\(guest.domain.name)' stopped before it became ready"
        if let last = messages.last {
            message += " (\(last))"
        }
        if let failure = guest.console.kernelFailure {
            message += "; the kernel said: \(failure)"
        }
        message += tail.isEmpty ? "; its console is empty" : "; last console lines:\n\(tail)"
        return AirlockError(
            .guestFailed, message, hint: deadlinePassed ? "raise --boot-timeout if the host is slow" : nil)
    }

    /// Upload, run, collect.
    private func work(in guest: Guest, image: Image, result: inout JobResult) throws {
        guard let session = guest.session else { return }

        let uploadStart = ContinuousClock.now
        try upload(session)
        result.phases.upload = seconds(since: uploadStart)
        logger.debug("workload pushed", metadata: ["phase.seconds": "\(result.phases.upload ?? 0)"])

        let runStart = ContinuousClock.now
        try runCommand(session, guest: guest, result: &result)
        result.phases.run = seconds(since: runStart)
        logger.debug("command ended", metadata: ["job.state": result.state.rawValue])

        if result.state == .canceled { return }
        let collectStart = ContinuousClock.now
        var report = CollectReport()
        do {
            try collect(session, into: &report)
        } catch {
            // The command's own outcome stays in result.json; the job fails (exit 125).
            result.state = isCancelled ? .canceled : .failed
            result.errorCode = (isCancelled ? AirlockError.Code.cancelled : .guestFailed).description
            result.error = "collecting results from guest '\(guest.domain.name)' failed: \(describe(error))"
        }
        result.collected = report
        if isCancelled && result.state != .canceled {
            result.state = .canceled
            result.error = "canceled while results were collected"
        }
        result.phases.collect = seconds(since: collectStart)
    }

    private func upload(_ session: Session) throws {
        let deadline = ContinuousClock.now + spec.transferTimeout
        let channel = try session.exec(
            GuestScript.unpack() + " && find . -print0 | tr -dc '\\000' | wc -c", deadline: deadline)
        defer { channel.free() }
        let writer = try TarWriter { bytes in
            try channel.write(bytes, deadline: deadline)
        }
        let entries = try writer.appendContents(of: spec.workload)
        try writer.finish()
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
        let counted = Int(String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        guard counted == entries + 1 else {
            throw AirlockError(
                .guestFailed,
                "the guest holds \(counted.map { String($0 - 1) } ?? "?") workload entries, "
                    + "\(entries) were sent")
        }
    }

    private func runCommand(_ session: Session, guest: Guest, result: inout JobResult) throws {
        let stdoutFile = try OutputFile(url: resultsFolder.appendingPathComponent("stdout"), limit: spec.maxOutputBytes)
        let stderrFile = try OutputFile(url: resultsFolder.appendingPathComponent("stderr"), limit: spec.maxOutputBytes)
        defer {
            result.stdoutBytes = stdoutFile.received
            result.stderrBytes = stderrFile.received
            result.stdoutTruncated = stdoutFile.truncated
            result.stderrTruncated = stderrFile.truncated
        }

        let script = GuestScript.run(command: spec.command, environment: spec.environment)
        let channel = try session.exec(script, deadline: nil)
        defer { channel.free() }
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
            result.error = "the command ran past its timeout of \(Self.format(spec.timeout)) and was killed"
            return
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

    private func killJob(_ session: Session) {
        guard let channel = try? session.exec(GuestScript.killJob(), deadline: .now + .seconds(5)) else { return }
        _ = try? channel.drain(deadline: .now + .seconds(5)) { _, _ in }
        channel.free()
    }

    private func lostGuest(_ guest: Guest, _ error: SSHError) -> AirlockError {
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

    private func collect(_ session: Session, into report: inout CollectReport) throws {
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
        defer { report.note(refusedInGuest(errors)) }
        try Collector(limits: spec.collectLimits) { try session.checkpoint(deadline: deadline) }.collect(
            from: reader, into: resultsFolder.appendingPathComponent("out"), report: &report)
        report.folderMissing = String(decoding: errors.prefix(8), as: UTF8.self) == "missing\n"
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
    private func refusedInGuest(_ stderr: [UInt8]) -> [CollectReport.Skipped] {
        let limit = Sizes.format(spec.collectLimits.maxBytes)
        return String(decoding: stderr, as: UTF8.self).split(separator: "\n").prefix(1000).compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "refused", let size = Int64(parts[1]) else { return nil }
            let name = parts[2].hasPrefix("./") ? parts[2].dropFirst(2) : parts[2]
            return CollectReport.Skipped(
                path: Terminal.escape(String(name)), reason: "result exceeds limit (\(Sizes.format(size)) > \(limit))")
        }
    }

    // MARK: - Clean-up and results

    private func record(_ error: Error, guest: Guest?, into result: inout JobResult) {
        if let error = error as? AirlockError, error.code == .cancelled {
            result.state = .canceled
            result.error = error.description
            return
        }
        if isCancelled {
            result.state = .canceled
            result.error = "canceled"
            return
        }
        result.state = .failed
        result.error = describe(error)
        result.errorCode = (error as? AirlockError)?.code.description
        result.hint = (error as? AirlockError)?.hint
        logger.debug("job failed", metadata: ["error": result.error ?? ""])
    }

    private func describe(_ error: Error) -> String {
        if let error = error as? AirlockError {
            return error.description
        }
        return "\(error)"
    }

    /// Destroys the guest and removes the job's files. Never throws; each step
    /// is safe when its set-up never ran.
    private func cleanUp(_ guest: Guest?) {
        if let guest {
            guest.session?.close()
            destroy(guest)
        } else if let name = shared.withLock({ $0.domain }),
            let connection = try? Connection(uri: spec.connectURI),
            let domain = try? connection.domain(named: name)
        {
            _ = try? domain.destroy()
        }
        shared.withLock { $0.domain = nil }
        if let folder = shared.withLock({ $0.jobFolder }) {
            try? FileManager.default.removeItem(atPath: folder)
            shared.withLock { $0.jobFolder = nil }
        }
    }

    private func destroy(_ guest: Guest) {
        do {
            try guest.domain.destroy()
            logger.debug("domain destroyed", metadata: ["domain.name": guest.domain.name])
        } catch {
            logger.info(
                "destroying the domain failed", metadata: ["domain.name": guest.domain.name, "error": "\(error)"])
        }
        guest.console.stop()
        shared.withLock { $0.domain = nil }
    }

    private func writeResult(_ result: JobResult, to folder: URL) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(result) else { return }
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let target = folder.appendingPathComponent("result.json")
        let temporary = folder.appendingPathComponent(".result.json.tmp")
        if FileManager.default.createFile(atPath: temporary.path, contents: data + Data("\n".utf8)) {
            _ = rename(temporary.path, target.path)
        }
    }

    // MARK: - Helpers

    private func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        let (whole, fraction) = elapsed.components
        return ((Double(whole) + Double(fraction) / 1e18) * 1000).rounded() / 1000
    }

    static func format(_ duration: Duration) -> String {
        let seconds = duration.components.seconds
        return seconds % 60 == 0 && seconds >= 60 ? "\(seconds / 60) min" : "\(seconds) s"
    }

    /// Twelve random lowercase hex digits.
    static func makeJobID() -> String {
        (0..<6).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
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
        var offset = 0
        while offset < keep {
            let written = write(handle, bytes.baseAddress?.advanced(by: offset), keep - offset)
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
    }
}
