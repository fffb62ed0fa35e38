import AirlockLog
import Foundation
import Libvirt
import SSH

// MARK: - Boot: make the guest and log in

extension JobRunner {
    /// Creates the guest and waits until its SSH server accepts the job's key.
    func startGuest(
        image: Image, plan: AcceleratorPlan, connection: Connection, result: inout JobResult
    ) throws -> Guest {
        // QEMU runs as its own user: it may pass through these folders, but
        // not list them; libvirt hands it the key file for the guest's lifetime.
        let runFolder = JobOwner.runFolder(in: spec.stateFolder)
        let jobFolder = runFolder.appendingPathComponent(jobID)
        try FileManager.default.createDirectory(at: runFolder, withIntermediateDirectories: true)
        _ = chmod(runFolder.path, 0o711)
        clearEarlierAttempt(jobFolder, connection: connection)
        try FileManager.default.createDirectory(at: jobFolder, withIntermediateDirectories: false)
        shared.withLock { $0.jobFolder = jobFolder.path }
        _ = chmod(jobFolder.path, 0o711)
        // Lets `airlock gc` tell this job from one whose process died.
        JobOwner.record(in: jobFolder)

        // Fresh keys for this job only: the guest learns both at boot, and
        // the host key is pinned.
        let keys = try GuestKeys.generate()
        let media = try prepareMedia(image: image, connection: connection, jobFolder: jobFolder, keys: keys)

        var accelerator = plan.first
        var probing = plan.probing
        let cache = AcceleratorCache(folder: spec.stateFolder.appendingPathComponent("accel"))
        func fallBackToTCG(_ why: String, error: Error? = nil) {
            var metadata = ["host.uri": connection.uri]
            metadata["error"] = error.map { "\($0)" }
            logger.info("KVM \(why) the guest; falling back to TCG emulation", metadata: metadata)
            accelerator = .tcg
            probing = false
        }
        while true {
            let defineStart = ContinuousClock.now
            var guest: Guest
            do {
                guest = try launch(
                    image: image, accelerator: accelerator, media: media, connection: connection, keys: keys)
            } catch  where probing && plan.fallback {
                fallBackToTCG("could not start", error: error)
                continue
            }
            result.phases.define = seconds(since: defineStart)
            result.accelerator = accelerator.rawValue
            if remote == nil {
                result.qemu = QEMUConfinement.read(domainName: guest.domain.name, uri: connection.uri)
                result.qemu?.warnIfUnconfined(logger)
            }
            result.sshPort = guest.port

            let bootStart = ContinuousClock.now
            // A KVM probe gets a short deadline: a working KVM boots this image in a fraction of it
            // (a cloud image waits for cloud-init, which takes longer).
            let bootTimeout = spec.bootTimeout(on: accelerator)
            let probeLimit: Duration = image.keyInjection == .cloudInit ? .seconds(45) : .seconds(8)
            let readyDeadline = bootStart + (probing ? probeLimit : bootTimeout)
            let ready = guest.console.waitUntilReady(deadline: readyDeadline) { isCancelled || hostDiskFull }
            if hostDiskFull {
                throw diskFullError(guest.domain.name)
            }
            if isCancelled {
                destroy(guest)
                throw AirlockError(.cancelled, "job '\(jobID)' was canceled")
            }
            if !ready && probing {
                destroy(guest)
                guard plan.fallback else {
                    throw AirlockError(
                        .hostUnavailable,
                        "KVM did not boot guest '\(guest.domain.name)' on host '\(connection.uri)' within "
                            + "\(probeLimit.components.seconds) s; KVM may not run guests here (a nested host?)",
                        hint: "use --accel auto, which falls back to TCG emulation, or --accel tcg")
                }
                fallBackToTCG("did not boot")
                continue
            }
            guard ready else {
                if let failure = guest.console.seedFailure {
                    throw AirlockError(
                        .guestFailed,
                        "guest '\(guest.domain.name)' will not take the job's keys: cloud-init did not use the "
                            + "job's seed (it said: \(failure)); last console lines:\n\(guest.console.tail())",
                        hint: "the image's cloud-init must read NoCloud seeds from a disk labelled cidata")
                }
                throw bootFailure(
                    guest, image: image, accelerator: accelerator, deadlinePassed: !guest.console.hasEnded)
            }
            // Remember what auto found, once a guest has really booted on it.
            if spec.accelerator == .auto && cache.lookup(uri: connection.uri) != accelerator {
                cache.remember(accelerator, uri: connection.uri)
            }
            logger.debug("guest ready", metadata: ["domain.name": guest.domain.name, "ssh.port": "\(guest.port)"])

            let session = try openSession(guest, image: image, deadline: bootStart + bootTimeout)
            guest.session = session
            result.phases.bootToSSH = seconds(since: bootStart)
            logger.debug("SSH up", metadata: ["ssh.port": "\(guest.port)"])
            return guest
        }
    }

    /// Removes what an earlier attempt of this job left in its folder (an
    /// attempt that lost its host cannot remove its files there): its local
    /// overlay if it had one, then the folder. Files on a remote host are
    /// removed by this attempt when it runs there, else by gc's sweep of that host.
    func clearEarlierAttempt(_ jobFolder: URL, connection: Connection) {
        guard FileManager.default.fileExists(atPath: jobFolder.path) else { return }
        logger.info("removing what an earlier attempt left", metadata: ["job.folder": jobFolder.path])
        if JobOwner.remoteHost(in: jobFolder) == nil {
            _ = JobOwner.removeOverlay(in: jobFolder, connection: connection)
        }
        FileTree.removeIfPossible(jobFolder)
    }

    /// What the guest is given, as paths on its host: its kernel and
    /// initrd, the key file (fw_cfg) or cloud-init seed, and its disks.
    struct Media {
        var kernel: String?
        var initrd: String?
        var keysFile: String?
        var disks: [DomainSpec.Disk] = []
        /// Bytes of the image sent to a remote host for this job.
        var uploaded: Int64 = 0
    }

    /// Writes the keys the way the image takes them and makes the job's
    /// overlay on the image's base disk.
    func prepareMedia(image: Image, connection: Connection, jobFolder: URL, keys: GuestKeys) throws -> Media {
        if remote != nil {
            return try prepareRemoteMedia(image: image, connection: connection, jobFolder: jobFolder, keys: keys)
        }
        var media = Media(kernel: image.kernelURL?.path, initrd: image.initrdURL?.path)
        if let base = image.diskURL {
            try DiskPool.checkReachable(base.resolvingSymlinksInPath())
            let pool = DiskPool(catalog: spec.catalog)
            let storage = try pool.open(connection)
            var capacity = image.diskBytes ?? 0
            if capacity == 0, let name = image.disk {
                capacity = (try? storage.volume(named: name)?.info().capacity) ?? 0
            }
            capacity = max(capacity, spec.diskBytes ?? 0)
            // Named in the job folder first, so that `airlock gc` finds it
            // should this process die between here and the clean-up.
            let planned = pool.folder.appendingPathComponent(DiskPool.overlayName(jobID: jobID)).path
            try Data((planned + "\n").utf8).write(to: jobFolder.appendingPathComponent(JobOwner.overlayFile))
            shared.withLock { $0.overlay = planned }
            let overlay = try pool.createOverlay(
                in: storage, jobID: jobID, base: base.resolvingSymlinksInPath(), capacity: capacity)
            shared.withLock { $0.overlay = overlay }
            media.disks.append(
                DomainSpec.Disk(path: overlay, format: "qcow2", backingPath: base.resolvingSymlinksInPath().path))
        }
        switch image.keyInjection {
        case .fwcfg:
            let file = jobFolder.appendingPathComponent("keys")
            try keys.write(to: file)
            media.keysFile = file.path
        case .cloudInit:
            let seed = jobFolder.appendingPathComponent("seed.iso")
            try CloudInitSeed(jobID: jobID, keys: keys, lifetimeSeconds: lifetimeSeconds).write(to: seed)
            media.disks.append(DomainSpec.Disk(path: seed.path, format: "raw", readOnly: true))
        }
        return media
    }

    /// Defines and starts the domain (paused until its console is attached),
    /// retrying with another port when the chosen one was taken meanwhile.
    func launch(
        image: Image, accelerator: Accelerator, media: Media, connection: Connection, keys: GuestKeys
    ) throws -> Guest {
        let name = "airlock-\(jobID)"
        var attempt = 0
        while true {
            attempt += 1
            let port = try PortAllocator.freeLoopbackPort()
            var spec = DomainSpec(
                name: name, jobID: jobID, accelerator: accelerator, vcpus: self.spec.vcpus,
                memoryMiB: self.spec.memoryMiB, kernel: media.kernel, initrd: media.initrd,
                cmdline: image.cmdline.map { $0 + " airlock.lifetime=\(lifetimeSeconds)" }, keysFile: media.keysFile,
                sshPort: port)
            spec.disks = media.disks
            spec.egressOpen = self.spec.egress == .open
            spec.stateFolder = self.spec.stateFolder.resolvingSymlinksInPath().path
            let domain: Domain
            do {
                shared.withLock { $0.domain = name }
                if attempt == 1, let stale = try? connection.domain(named: name) {
                    // This job's guest from an earlier attempt, on a host that came back: this process owns the job now.
                    _ = try? stale.destroy()
                }
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
            let watch = GuestWatch(domain: domain) { [weak self] in self?.stopOnDiskFull() }
            watch.start()
            return Guest(
                domain: domain, console: console, watch: watch, port: port, keys: keys,
                uploaded: remote == nil ? nil : media.uploaded)
        }
    }

    /// How long the guest may live at most, even if Airlock itself dies:
    /// boot (as slow as TCG) and command limits plus an hour for transfers.
    /// The guest powers itself off then, and libvirt removes the transient domain.
    var lifetimeSeconds: Int64 {
        spec.bootTimeout(on: .tcg).components.seconds + spec.timeout.components.seconds + 3600
    }

    func openSession(
        _ guest: Guest, image: Image, deadline: ContinuousClock.Instant, interrupt: Interrupt? = nil
    ) throws -> Session {
        do {
            let session = try route.open(port: guest.port, deadline: deadline, interrupt: interrupt ?? self.interrupt)
            logger.debug("SSH handshake done")
            try session.verifyHostKey(guest.keys.host.publicKeyBlob)
            try session.authenticate(user: image.sshUser, key: guest.keys.client, deadline: deadline)
            return session
        } catch let error as AirlockError {
            throw error
        } catch let error as SSHError {
            switch error.kind {
            case .interrupted:
                throw AirlockError(.cancelled, "job '\(jobID)' was canceled")
            case .hostKeyMismatch:
                throw AirlockError(
                    .guestFailed, "refusing guest '\(guest.domain.name)' on port \(guest.port)", cause: error)
            case .authenticationFailed where image.keyInjection == .cloudInit:
                let lines = guest.console.tail().split(separator: "\n").filter { $0.contains("cloud-init") }
                throw AirlockError(
                    .guestFailed,
                    "guest '\(guest.domain.name)' rejected the job's key as '\(image.sshUser)': cloud-init may not "
                        + "have applied the seed"
                        + (lines.isEmpty ? "" : "; its cloud-init console lines:\n" + lines.joined(separator: "\n")),
                    hint: "check that the image's cloud-init reads NoCloud seeds and that --ssh-user is right",
                    cause: error)
            default:
                throw AirlockError(
                    .guestFailed, "cannot open SSH to guest '\(guest.domain.name)' on port \(guest.port)",
                    cause: error)
            }
        }
    }

    func bootFailure(_ guest: Guest, image: Image, accelerator: Accelerator, deadlinePassed: Bool) -> AirlockError {
        // A console that ends with the connection means libvirtd went away, not the guest.
        if !guest.domain.connection.isAlive {
            return AirlockError(
                .hostUnavailable,
                "lost the connection to libvirt at '\(spec.connectURI)' while guest '\(guest.domain.name)' booted",
                hint: "check that libvirtd is running")
        }
        let messages = guest.console.guestMessages
        let tail = guest.console.tail()
        var limit = "\(spec.bootTimeout(on: accelerator).components.seconds) s"
        if accelerator == .tcg && spec.tcgTimeoutFactor != 1 {
            limit += String(
                format: " (the boot timeout of %lld s × %g under TCG)", spec.bootTimeout.components.seconds,
                spec.tcgTimeoutFactor)
        }
        var message =
            deadlinePassed
            ? "guest '\(guest.domain.name)' did not become ready within \(limit)"
            : "guest '\(guest.domain.name)' stopped before it became ready"
        if let last = messages.last {
            message += " (\(last))"
        }
        if let failure = guest.console.kernelFailure {
            message += "; the kernel said: \(failure)"
        } else if deadlinePassed && image.keyInjection == .cloudInit {
            // The ready line comes from the seed's last cloud-init step.
            message += "; cloud-init did not finish, or did not read the job's seed"
        }
        message += tail.isEmpty ? "; its console is empty" : "; last console lines:\n\(tail)"
        return AirlockError(
            .guestFailed, message, hint: deadlinePassed ? "raise --boot-timeout if the host is slow" : nil)
    }
}
