import Airlock
import AirlockLog
import Foundation

/// `airlock bench`: runs the hello job N times and, in the same run, the
/// floor (bare QEMU on the same kernel, initramfs and disks until the SSH
/// banner), then prints the median of every phase and the ratio
/// total/floor. With several images it prints boot to SSH for each.
struct BenchCommand {
    static let usage =
        "airlock bench [--runs N] [--image NAME[,NAME...]] [--workload DIR] [--accel MODE] [--state-dir DIR]"

    static let help = """
        Time the hello job against the floor: QEMU started by hand on the same
        kernel, initramfs and disks (a qcow2 overlay made with qemu-img, the
        same cloud-init seed), measured until the guest's SSH banner arrives.
        Given several images (--image tiny,debian,cloud), it times boot to SSH
        on each against its own floor, all in one run.
        'airlock bench batch' measures the job queue instead (see its --help).

        Usage: \(usage)

        Options:
          --runs N          jobs and floor boots to time, each (default: 5)
          --image NAMES     guest image, or a comma-separated list (default: tiny)
          --workload DIR    workload to run (default: examples/hello, relative to the current folder)
          --accel MODE      auto, kvm or tcg (default: auto)
          --connect URI     libvirt URI (default: qemu:///system)
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --debug           log every step
        """

    var runs = 5
    var image = "tiny"
    var workload = "examples/hello"
    var accelerator = JobSpec.AcceleratorChoice.auto
    var connectURI = "qemu:///system"
    var stateFolder: URL
    var imagesFolder: URL?
    var debug = false

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> BenchCommand {
        var command = BenchCommand(stateFolder: Defaults.stateFolder(environment))
        command.imagesFolder = environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) }
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError("unexpected argument '\(option.word)'")
            }
            switch name {
            case "--runs":
                command.runs = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
                guard command.runs >= 1 else { throw UsageError("--runs must be at least 1") }
            case "--image": command.image = try reader.value(for: name, inline: option.inline)
            case "--workload": command.workload = try reader.value(for: name, inline: option.inline)
            case "--accel":
                let value = try reader.value(for: name, inline: option.inline)
                guard let choice = JobSpec.AcceleratorChoice(rawValue: value) else {
                    throw UsageError("'\(value)' is not an acceleration mode", hint: "use auto, kvm or tcg")
                }
                command.accelerator = choice
            case "--connect": command.connectURI = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--debug": command.debug = true
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock bench --help'")
            }
        }
        return command
    }

    func run(logger: Logger) throws -> Int32 {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-bench-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        // QEMU opens the floor's overlay and seed here as its own user.
        _ = chmod(scratch.path, 0o711)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let images = image.split(separator: ",").map(String.init)
        guard images.count > 1 else {
            let measured = try measure(image, scratch: scratch, logger: logger)
            print(phaseTable(measured), terminator: "")
            return 0
        }
        var table =
            "image        accel   airlock boot to SSH   floor    ratio   airlock total   (medians of \(runs), s)\n"
        for name in images {
            let measured = try measure(name, scratch: scratch, logger: logger)
            let boot = median(measured.results.compactMap { $0.phases.bootToSSH })
            let floor = median(measured.floors)
            table += String(
                format: "%@ %@ %21.2f %7.2f %8.2f %15.2f\n", name.padding(toLength: 12, withPad: " ", startingAt: 0),
                (measured.accelerator?.rawValue ?? "?").padding(toLength: 6, withPad: " ", startingAt: 0), boot, floor,
                boot / floor, median(measured.results.compactMap { $0.phases.total }))
        }
        table +=
            "\nfloor: bare qemu-system-x86_64 on the same kernel, initramfs, disks and seed, until the SSH banner\n"
        print(table, terminator: "")
        return 0
    }

    /// What `runs` jobs and as many floor boots of one image measured.
    struct Measured {
        var image: String
        var results: [JobResult] = []
        var floors: [Double] = []
        var accelerator: Accelerator?
    }

    private func measure(_ image: String, scratch: URL, logger: Logger) throws -> Measured {
        let catalog = ImageCatalog(root: imagesFolder ?? stateFolder.appendingPathComponent("images"))
        let loaded = try catalog.image(named: image)
        var measured = Measured(image: image)
        for index in 0..<runs {
            var spec = JobSpec(
                image: image, workload: URL(fileURLWithPath: workload), command: ["sh", "run.sh"],
                stateFolder: stateFolder)
            spec.imagesFolder = imagesFolder
            spec.accelerator = measured.accelerator.map { $0 == .kvm ? .kvm : .tcg } ?? self.accelerator
            spec.connectURI = connectURI
            spec.memoryMiB = max(spec.memoryMiB, loaded.minimumMemoryMiB)
            spec.environment = [("HELLO_EXIT", "0")]
            spec.resultsFolder = scratch.appendingPathComponent("job-\(image)-\(index)")
            let result = try JobRunner(spec: spec, logger: logger).run()
            guard result.state == .succeeded else {
                throw AirlockError(
                    .guestFailed,
                    "bench job \(index + 1) on '\(image)' did not succeed: \(result.error ?? "\(result.state)")")
            }
            measured.results.append(result)
            if measured.accelerator == nil {
                measured.accelerator = result.accelerator.flatMap(Accelerator.init(rawValue:))
            }
            let floor = FloorBoot(
                image: loaded, accelerator: measured.accelerator ?? .tcg, memoryMiB: spec.memoryMiB, workFolder: scratch
            )
            measured.floors.append(try floor.measure())
            Output.note(
                String(
                    format: "airlock: %@ run %d of %d: job %.2f s (boot to SSH %.2f s), floor %.2f s", image, index + 1,
                    runs, result.phases.total ?? 0, result.phases.bootToSSH ?? 0, measured.floors.last ?? 0))
        }
        return measured
    }

    private func phaseTable(_ measured: Measured) -> String {
        let results = measured.results
        let floors = measured.floors
        let accelerator = measured.accelerator
        let rows: [(String, KeyPath<JobResult.Phases, Double?>)] = [
            ("define", \.define), ("boot to SSH", \.bootToSSH), ("upload", \.upload), ("run", \.run),
            ("collect", \.collect), ("destroy", \.destroy), ("total", \.total),
        ]
        var table =
            "Airlock bench: \(runs) runs of '\(workload)' on image '\(measured.image)', accelerator "
            + "\(accelerator?.rawValue ?? "?"), medians in seconds\n\n"
        table += "phase            airlock     floor\n"
        for (name, path) in rows {
            let value = median(results.compactMap { $0.phases[keyPath: path] })
            let floorColumn =
                name == "boot to SSH" || name == "total" ? String(format: "%9.3f", median(floors)) : "        -"
            table +=
                name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: "%9.3f", value)
                + "  " + floorColumn + "\n"
        }
        let total = median(results.compactMap { $0.phases.total })
        let floor = median(floors)
        table += "\nfloor: bare qemu-system-x86_64, same kernel, initramfs, disks and devices, until the SSH banner\n"
        table += String(
            format: "ratio total/floor: %.2f  (boot to SSH/floor: %.2f)\n", total / floor,
            median(results.compactMap { $0.phases.bootToSSH }) / floor)
        return table
    }

    private func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}
