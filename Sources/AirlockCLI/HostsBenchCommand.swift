import Airlock
import Foundation

/// `airlock bench hosts`: what a second host gives a batch, and what the
/// jump path to a remote host's guests costs, each measured against this
/// machine in the same run.
struct HostsBenchCommand {
    static let usage =
        "airlock bench hosts --remote URI [--jobs N] [--concurrency N] [--runs N] [--image NAME] [--workload DIR]"

    static let help = """
        Time a batch on this machine alone against the same batch spread over this
        machine and a remote host, at the same concurrency per host; and the hello
        job on this machine against the same job on the remote host, reached
        through SSH to the host.

        Usage: \(usage)

        Options:
          --remote URI          the second host, as qemu+ssh://USER@HOST/system?... (required;
                                scripts/netns-host.sh makes one on this machine)
          --jobs N              hello jobs per batch (default: 24)
          --concurrency N       guests at once per host (default: 1)
          --runs N              hello jobs on each host for the latency figures (default: 5)
          --image NAME          guest image (default: tiny)
          --workload DIR        workload to run (default: examples/hello, relative to the current folder)
          --state-dir DIR       where the accelerator cache and images are read from
                                (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var remote = ""
    var jobs = 24
    var concurrency = 1
    var runs = 5
    var image = "tiny"
    var workload = "examples/hello"
    var stateFolder: URL
    var imagesFolder: URL?

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> HostsBenchCommand {
        var command = HostsBenchCommand(stateFolder: Defaults.stateFolder(environment))
        command.imagesFolder = environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) }
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else { throw UsageError("unexpected argument '\(option.word)'") }
            func number(_ range: ClosedRange<Int>) throws(UsageError) -> Int {
                let value = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
                guard range.contains(value) else {
                    throw UsageError("\(name) must be \(range.lowerBound) to \(range.upperBound)")
                }
                return value
            }
            switch name {
            case "--remote": command.remote = try reader.value(for: name, inline: option.inline)
            case "--jobs": command.jobs = try number(1...1000)
            case "--concurrency": command.concurrency = try number(1...64)
            case "--runs": command.runs = try number(1...50)
            case "--image": command.image = try reader.value(for: name, inline: option.inline)
            case "--workload": command.workload = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock bench hosts --help'")
            }
        }
        guard !command.remote.isEmpty else {
            throw UsageError(
                "missing --remote URI",
                hint: "for a host on this machine: uri=$(scripts/netns-host.sh up bench 9 /tmp/airlock-bench-host)")
        }
        return command
    }

    func run(signals: SignalRelay) throws -> Int32 {
        guard try RemoteHost.parse(remote) != nil else {
            throw AirlockError(
                .invalidArgument, "'\(remote)' is not a remote host", hint: "pass a qemu+ssh://USER@HOST/system URI")
        }
        let workload = try BenchProcesses.workloadFolder(self.workload)
        let bench = try BenchProcesses.make(
            images: imagesFolder ?? stateFolder.appendingPathComponent("images"),
            accelCache: stateFolder.appendingPathComponent("accel"))
        signals.onFirst = {
            Output.note("airlock: stopping the benchmark; its jobs are canceled and its files removed")
            bench.interrupt()
        }
        defer { bench.tearDown() }

        // 1. One job on the remote host first: it learns the accelerator there and receives the image,
        //    so that neither is counted below.
        Output.note("airlock: warming up the remote host (accelerator probe, image upload)")
        _ = try bench.timedRun(on: remote, image: image, workload: workload, name: "warm-up")
        bench.keepAcceleratorCache(of: "warm-up")

        // 2. Throughput: one host, then two.
        let local = "qemu:///system"
        let one = try bench.queued(
            jobs: jobs, concurrency: concurrency, image: image, workload: workload, name: "one-host",
            hosts: [["local", local]])
        Output.note(String(format: "airlock: one host: %.1f jobs/min", one.jobsPerMinute))
        let two = try bench.queued(
            jobs: jobs, concurrency: concurrency, image: image, workload: workload, name: "two-hosts",
            hosts: [["local", local], ["remote", remote]])
        Output.note(String(format: "airlock: two hosts: %.1f jobs/min", two.jobsPerMinute))

        // 3. Latency: the hello job on each host, alternating.
        var localRuns: [JobResult] = []
        var remoteRuns: [JobResult] = []
        for index in 0..<runs {
            localRuns.append(try bench.timedRun(on: local, image: image, workload: workload, name: "local-\(index)"))
            remoteRuns.append(try bench.timedRun(on: remote, image: image, workload: workload, name: "remote-\(index)"))
        }
        func median(_ results: [JobResult], _ phase: (JobResult.Phases) -> Double?) -> Double {
            let values = results.compactMap { phase($0.phases) }.sorted()
            return values.isEmpty ? .nan : values[values.count / 2]
        }
        let phases: [(String, (JobResult.Phases) -> Double?)] = [
            ("define", { $0.define }), ("boot to SSH", { $0.bootToSSH }), ("upload", { $0.upload }),
            ("run", { $0.run }), ("collect", { $0.collect }), ("destroy", { $0.destroy }), ("total", { $0.total }),
        ]

        var report = "Airlock hosts bench: image '\(image)', workload '\(self.workload)'\n"
        report += "remote host: \(remote)\n\n"
        report += "throughput, \(jobs) jobs, concurrency \(concurrency) per host    one host     two hosts    ratio\n"
        report += String(
            format: "  submit --batch + controller              %6.1f/min   %6.1f/min   %5.2f\n\n",
            one.jobsPerMinute, two.jobsPerMinute, two.jobsPerMinute / one.jobsPerMinute)
        report += "hello job, median of \(runs) (seconds)        this machine   remote host   added\n"
        for (name, phase) in phases {
            let here = median(localRuns, phase)
            let there = median(remoteRuns, phase)
            report += name.padding(toLength: 42, withPad: " ", startingAt: 0)
            report += String(format: "%9.3f     %9.3f    %+7.3f\n", here, there, there - here)
        }
        report += """

            one host: 'airlock host add local qemu:///system', then 'submit --batch' and one
                      'airlock controller --concurrency C'; timed from the submit to the last job's end
            two hosts: the same with the remote host added; the controller spreads the batch
            hello job: 'airlock run' on each host in turn; the remote one reaches its guest through
                       SSH to the host and a forwarded channel to the guest's port there
            the remote host held the image and knew its accelerator before any figure was taken

            """
        print(report, terminator: "")
        return 0
    }
}
