import Airlock
import AirlockLog
import Foundation

/// `airlock bench`: runs the hello job N times and, in the same run, the
/// floor (bare QEMU on the same kernel and initramfs until the SSH banner),
/// then prints the median of every phase and the ratio total/floor.
struct BenchCommand {
    static let usage = "airlock bench [--runs N] [--image NAME] [--workload DIR] [--accel MODE] [--state-dir DIR]"

    static let help = """
        Time the hello job against the floor: QEMU started by hand on the same
        kernel and initramfs, measured until the guest's SSH banner arrives.
        'airlock bench batch' measures the job queue instead (see its --help).

        Usage: \(usage)

        Options:
          --runs N          jobs and floor boots to time, each (default: 5)
          --image NAME      guest image (default: tiny)
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
        defer { try? FileManager.default.removeItem(at: scratch) }

        var results: [JobResult] = []
        var floors: [Double] = []
        var accelerator: Accelerator?
        for index in 0..<runs {
            var spec = JobSpec(
                image: image, workload: URL(fileURLWithPath: workload), command: ["sh", "run.sh"],
                stateFolder: stateFolder)
            spec.imagesFolder = imagesFolder
            spec.accelerator = accelerator.map { $0 == .kvm ? .kvm : .tcg } ?? self.accelerator
            spec.connectURI = connectURI
            spec.environment = [("HELLO_EXIT", "0")]
            spec.resultsFolder = scratch.appendingPathComponent("job-\(index)")
            let result = try JobRunner(spec: spec, logger: logger).run()
            guard result.state == .succeeded else {
                throw AirlockError(
                    .guestFailed, "bench job \(index + 1) did not succeed: \(result.error ?? "\(result.state)")")
            }
            results.append(result)
            if accelerator == nil {
                accelerator = result.accelerator.flatMap(Accelerator.init(rawValue:))
            }

            let catalog = ImageCatalog(root: imagesFolder ?? stateFolder.appendingPathComponent("images"))
            let floor = FloorBoot(
                image: try catalog.image(named: image), accelerator: accelerator ?? .tcg, memoryMiB: spec.memoryMiB,
                workFolder: scratch)
            floors.append(try floor.measure())
            Output.note(
                String(
                    format: "airlock: run %d of %d: job %.2f s, floor %.2f s", index + 1, runs,
                    result.phases.total ?? 0, floors.last ?? 0))
        }

        let rows: [(String, KeyPath<JobResult.Phases, Double?>)] = [
            ("define", \.define), ("boot to SSH", \.bootToSSH), ("upload", \.upload), ("run", \.run),
            ("collect", \.collect), ("destroy", \.destroy), ("total", \.total),
        ]
        var table =
            "Airlock bench: \(runs) runs of '\(workload)' on image '\(image)', accelerator "
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
        table += "\nfloor: bare qemu-system-x86_64, same kernel, initramfs and devices, until the SSH banner\n"
        table += String(
            format: "ratio total/floor: %.2f  (boot to SSH/floor: %.2f)\n", total / floor,
            median(results.compactMap { $0.phases.bootToSSH }) / floor)
        print(table, terminator: "")
        return 0
    }

    private func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}
