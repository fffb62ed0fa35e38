import Foundation

/// The floor a job's start-up is measured against: QEMU started by hand (no
/// libvirt, no Airlock) on the same kernel, initramfs, disks and devices,
/// timed until the guest's SSH banner arrives on the forwarded port.
public struct FloorBoot: Sendable {
    public let image: Image
    public let accelerator: Accelerator
    public let memoryMiB: Int
    public let workFolder: URL

    public init(image: Image, accelerator: Accelerator, memoryMiB: Int, workFolder: URL) {
        self.image = image
        self.accelerator = accelerator
        self.memoryMiB = memoryMiB
        self.workFolder = workFolder
    }

    /// Boots once and returns the seconds from spawning QEMU to the SSH banner.
    ///
    /// A disk image boots from a qcow2 overlay made with qemu-img (its base
    /// is never written); a cloud image gets the same seed a job gets.
    public func measure(timeout: Duration = .seconds(300)) throws -> Double {
        let scratch = workFolder.appendingPathComponent("floor-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        _ = chmod(scratch.path, 0o711)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let keys = try GuestKeys.generate()
        let port = try PortAllocator.freeLoopbackPort()
        let spec = DomainSpec(
            name: "floor", jobID: "floor", accelerator: accelerator, vcpus: 1, memoryMiB: memoryMiB,
            kernel: nil, initrd: nil, cmdline: nil, keysFile: nil, sshPort: port)
        var arguments = [
            "-machine", "q35,accel=\(accelerator.rawValue)", "-m", "\(memoryMiB)", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device",
            "virtio-rng-pci,rng=rng0,bus=pcie.0,addr=0x11",
            "-netdev", spec.netdev, "-device", spec.nicDevice,
        ]
        if accelerator == .kvm {
            arguments += ["-cpu", "host"]
        }
        // Confined like libvirt's guests: QEMU's own user and a seccomp filter
        // with no child processes. Images may come from anywhere. (The filter
        // cannot also deny set*id calls: -runas makes them after it is in place.)
        arguments += ["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny"]
        if let account = QEMUUser.account, let entry = getpwuid(account.uid) {
            arguments += ["-runas", String(cString: entry.pointee.pw_name)]
        }
        /// QEMU option values end at a comma; a comma in a path is written twice.
        func option(_ path: String) -> String { path.replacingOccurrences(of: ",", with: ",,") }
        if let kernel = image.kernelURL, let initrd = image.initrdURL, let cmdline = image.cmdline {
            arguments += ["-kernel", kernel.path, "-initrd", initrd.path, "-append", cmdline]
        }
        var disks: [(path: String, format: String, readOnly: Bool)] = []
        if let base = image.diskURL {
            let overlay = scratch.appendingPathComponent("disk.qcow2")
            try QEMUImage.createOverlay(overlay, base: base)
            giveToQEMU(overlay)
            disks.append((overlay.path, "qcow2", false))
        }
        switch image.keyInjection {
        case .fwcfg:
            let file = scratch.appendingPathComponent("keys")
            try keys.write(to: file)
            giveToQEMU(file)
            arguments += ["-fw_cfg", "name=opt/airlock/keys,file=\(option(file.path))"]
        case .cloudInit:
            let seed = scratch.appendingPathComponent("seed.iso")
            try CloudInitSeed(jobID: "floor\(port)", keys: keys, lifetimeSeconds: 900).write(to: seed)
            giveToQEMU(seed)
            disks.append((seed.path, "raw", true))
        }
        for (index, disk) in disks.enumerated() {
            arguments += [
                "-drive",
                "file=\(option(disk.path)),if=none,id=disk\(index),format=\(disk.format)\(disk.readOnly ? ",readonly=on" : "")",
                "-device",
                String(format: "virtio-blk-pci,drive=disk%d,bus=pcie.0,addr=0x%02x", index, 0x12 + index)
                    + (index == 0 && image.kernel == nil ? ",bootindex=1" : ""),
            ]
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-system-x86_64")
        process.arguments = arguments
        let console = Pipe()
        process.standardOutput = console
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice

        let start = ContinuousClock.now
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let deadline = start + timeout
        try waitForLine(ConsoleWatcher.readyLine, on: console.fileHandleForReading.fileDescriptor, deadline: deadline)
        try readBanner(port: port, deadline: deadline)
        return (ContinuousClock.now - start).inSeconds
    }

    /// Hands a scratch file to QEMU's user, as libvirt does for its guests.
    private func giveToQEMU(_ file: URL) {
        if let account = QEMUUser.account {
            _ = chown(file.path, account.uid, account.gid)
        }
    }

    private func waitForLine(_ line: String, on fd: Int32, deadline: ContinuousClock.Instant) throws {
        var seen = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let needle = Array(line.utf8)
        while true {
            let left = deadline - .now
            guard left > .zero else {
                throw AirlockError(.timeout, "the floor guest did not become ready")
            }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 1, Int32(clamping: left.components.seconds * 1000 + 1)) > 0 else { continue }
            let count = read(fd, &buffer, buffer.count)
            guard count > 0 else {
                throw AirlockError(.guestFailed, "the floor QEMU exited before its guest was ready")
            }
            seen += buffer[0..<count]
            if seen.count >= needle.count,
                (0...(seen.count - needle.count)).contains(where: {
                    seen[$0..<($0 + needle.count)].elementsEqual(needle)
                })
            {
                return
            }
            if seen.count > 65536 {
                seen.removeFirst(seen.count - 1024)
            }
        }
    }

    private func readBanner(port: Int, deadline: ContinuousClock.Instant) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = PortAllocator.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            throw AirlockError(.guestFailed, "cannot connect to the floor guest", cause: POSIXFailure())
        }
        var buffer = [UInt8](repeating: 0, count: 256)
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        let left = max(1, Int32(clamping: (deadline - .now).components.seconds * 1000))
        guard poll(&fds, 1, left) > 0, read(fd, &buffer, buffer.count) > 4,
            buffer.starts(with: Array("SSH-".utf8))
        else {
            throw AirlockError(.guestFailed, "the floor guest sent no SSH banner")
        }
    }
}
