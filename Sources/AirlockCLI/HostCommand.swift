import Airlock
import Foundation

/// `airlock host`: the libvirt hosts controllers place jobs on.
struct HostCommand {
    static let usage = "airlock host add|import|ls|rm|drain|undrain ..."

    static let help = """
        Manage the hosts that controllers place jobs on. With no host added,
        a controller runs jobs on its --connect host (default qemu:///system).

        Usage:
          airlock host add NAME URI [--vcpus N] [--memory SIZE] [--label KEY=VALUE]... [--replace]
          airlock host import FILE [--replace]
          airlock host ls [--json]
          airlock host rm NAME
          airlock host drain NAME       place no new jobs there; running jobs finish
          airlock host undrain NAME

        URI is libvirt's: qemu:///system for this machine, or
        qemu+ssh://USER@HOST/system?keyfile=PATH for another. Airlock reaches a
        remote host's guests through SSH to that host, with the same user and
        key; the host's key must be in ~/.ssh/known_hosts (or the file the
        URI's known_hosts= names).

        Options:
          --vcpus N          vCPUs guests may use there (default: the host's CPUs)
          --memory SIZE      memory guests may use there (default: the host's, less a reserve)
          --label KEY=VALUE  for jobs submitted with --host-label (repeatable)
          --replace          replace a host of the same name
          --json             ls: one JSON array
          --concurrency N    ls: guests per host to count free room with (default: this machine's CPUs)
          --state-dir DIR    Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)

        FILE is the hosts file of terraform/ ('terraform output -raw hosts_file').
        """

    enum Action {
        case add(JobStore.Host, replace: Bool)
        case importFile(String, replace: Bool)
        case list(json: Bool, concurrency: Int?)
        case remove(String)
        case drain(String, Bool)
    }

    var action: Action
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> HostCommand {
        guard let verb = arguments.first else {
            throw UsageError("missing a host command", hint: usage)
        }
        var reader = ArgumentReader(Array(arguments.dropFirst()))
        var stateFolder = Defaults.stateFolder(environment)
        var words: [String] = []
        var vcpus: Int?
        var memoryMiB: Int?
        var labels: [String: String] = [:]
        var replace = false
        var json = false
        var concurrency: Int?
        while let option = reader.next() {
            guard let name = option.name else {
                words.append(option.word)
                continue
            }
            switch name {
            case "--vcpus":
                vcpus = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
            case "--memory":
                memoryMiB = Int(
                    try ValueParser.size(
                        try reader.value(for: name, inline: option.inline), option: name, defaultUnit: 1 << 20) >> 20)
            case "--label":
                let pair = try reader.value(for: name, inline: option.inline)
                guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                    throw UsageError("'--label \(pair)' needs the form KEY=VALUE")
                }
                labels[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            case "--replace": replace = true
            case "--json": json = true
            case "--concurrency":
                concurrency = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
            case "--state-dir":
                stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default:
                throw UsageError("unknown option '\(name)'", hint: "see 'airlock host --help'")
            }
        }
        func expect(_ count: Int, _ form: String) throws(UsageError) {
            guard words.count == count else {
                throw UsageError("'airlock host \(verb)' takes \(form)", hint: "see 'airlock host --help'")
            }
        }
        let action: Action
        switch verb {
        case "add":
            try expect(2, "a NAME and a URI")
            action = .add(
                JobStore.Host(name: words[0], uri: words[1], vcpus: vcpus, memoryMiB: memoryMiB, labels: labels),
                replace: replace)
        case "import":
            try expect(1, "one hosts file")
            action = .importFile(words[0], replace: replace)
        case "ls":
            try expect(0, "no arguments")
            action = .list(json: json, concurrency: concurrency)
        case "rm":
            try expect(1, "one host NAME")
            action = .remove(words[0])
        case "drain", "undrain":
            try expect(1, "one host NAME")
            action = .drain(words[0], verb == "drain")
        default:
            throw UsageError("unknown host command '\(verb)'", hint: usage)
        }
        return HostCommand(action: action, stateFolder: stateFolder)
    }

    func run() throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder)
        switch action {
        case .add(let host, let replace):
            try queue.store.addHost(host, replace: replace)
            print("added host \(host.name) (\(host.uri))")
        case .importFile(let path, let replace):
            let hosts = try HostsFile.load(URL(fileURLWithPath: path))
            for host in hosts {
                try queue.store.addHost(host, replace: replace)
                print("added host \(host.name) (\(host.uri))")
            }
        case .list(let json, let concurrency):
            let hosts = try queue.store.hosts()
            let reports = HostReport.probe(
                hosts, queue: queue, concurrency: concurrency ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
            if json {
                Output.write(Rendering.json(reports.map(Self.object)), to: STDOUT_FILENO)
            } else if hosts.isEmpty {
                Output.note("airlock: no host added; controllers run jobs on their --connect host (qemu:///system)")
            } else {
                print(Self.table(reports), terminator: "")
                for report in reports where report.problem != nil {
                    Output.note("airlock: host \(report.host.name): \(report.problem ?? "")")
                }
            }
        case .remove(let name):
            try queue.store.removeHost(name)
            print("removed host \(name)")
        case .drain(let name, let draining):
            try queue.store.setDraining(name, draining)
            print(draining ? "draining host \(name): no new jobs start there" : "host \(name) takes jobs again")
        }
        return 0
    }

    static func table(_ reports: [HostReport]) -> String {
        Rendering.table(
            ["NAME", "STATE", "ACCEL", "GUESTS", "JOBS", "FREE VCPUS", "FREE MEMORY", "LABELS", "URI"],
            reports.map { report in
                let state = !report.reachable ? "unreachable" : report.host.draining ? "draining" : "ready"
                return [
                    report.host.name, state, report.accelerator ?? "-", report.guests.map(String.init) ?? "-",
                    String(report.jobs),
                    report.freeVCPUs.map { "\($0) of \(report.capacity?.vcpus ?? 0)" } ?? "-",
                    report.freeMemoryMiB.map {
                        "\(Sizes.format(Int64($0) << 20)) of \(Sizes.format(Int64(report.capacity?.memoryMiB ?? 0) << 20))"
                    } ?? "-",
                    report.host.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
                        separator: ","),
                    report.host.uri,
                ]
            })
    }

    static func object(_ report: HostReport) -> [String: Any] {
        var object: [String: Any] = [
            "name": report.host.name, "uri": report.host.uri, "reachable": report.reachable,
            "draining": report.host.draining, "labels": report.host.labels, "jobs": report.jobs,
        ]
        object["problem"] = report.problem
        object["accelerator"] = report.accelerator
        object["guests"] = report.guests
        object["vcpus"] = report.capacity?.vcpus
        object["memoryMiB"] = report.capacity?.memoryMiB
        object["freeVCPUs"] = report.freeVCPUs
        object["freeMemoryMiB"] = report.freeMemoryMiB
        return object
    }
}
