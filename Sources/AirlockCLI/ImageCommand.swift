import Airlock
import AirlockLog
import Foundation

/// `airlock image ls|inspect|build|import|rm`: the image catalog.
struct ImageCommand {
    static let usage = "airlock image ls|inspect NAME|build NAME|import NAME FILE|rm NAME [options]"

    static let help = """
        Manage guest images. An image is a manifest (how it boots, how it gets
        its keys, its SSH user, minimum memory, content and recipe hashes) with
        its kernel and initramfs in STATE_DIR/images/NAME, and its base disk in
        the libvirt storage pool STATE_DIR/images/.pool. Base disks are never
        written: each job boots from a qcow2 overlay that is removed when the
        job ends.

        Usage:
          airlock image ls [--json]
          airlock image inspect NAME
          airlock image build NAME [--force] [--recipes DIR]
          airlock image import NAME FILE [--force] [--ssh-user USER] [--min-memory SIZE]
          airlock image rm NAME

        build runs the recipe RECIPES/NAME/build.sh (the repository's images/
        folder by default) and skips the build when the recipe has not changed
        since the image was built; --force builds anyway.

        import copies a qcow2 or raw disk image with cloud-init (a Debian or
        Ubuntu cloud image, say) into the pool. Jobs boot it from its own disk
        and hand it their keys, host key and hostname in a NoCloud seed.
        --force replaces an image of the same name.

        rm refuses while a job runs on the image's disk (a job on an image
        without a disk has read all it needs once it has started).

        Exit status: 0 done; 64 bad usage or name; 66 the file or the image is
        not usable; 69 libvirt unreachable; 75 the image is in use, try later;
        125 the recipe failed; 130 interrupted.

        Options:
          --state-dir DIR     Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --images DIR        image folder (default: $AIRLOCK_IMAGES or STATE_DIR/images)
          --connect URI       libvirt URI (default: qemu:///system)
          --recipes DIR       build: folder of recipes (default: $AIRLOCK_RECIPES or the images/
                              folder of the checkout the airlock binary was built in)
          --force             build: rebuild; import: replace
          --ssh-user USER     import: the account Airlock logs in to (default: root)
          --min-memory SIZE   import: the least memory a job may have (default: 512M)
          --json              ls: one JSON array
        """

    var action: String
    var names: [String] = []
    var stateFolder: URL
    var imagesFolder: URL?
    var recipes: URL?
    var connectURI = "qemu:///system"
    var force = false
    var json = false
    var options = ImageCatalog.ImportOptions()

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> ImageCommand {
        guard let action = arguments.first else {
            throw UsageError("no image command given", hint: "use ls, inspect, build, import or rm")
        }
        guard ["ls", "inspect", "build", "import", "rm"].contains(action) else {
            throw UsageError(
                "unknown image command '\(Terminal.escape(action))'", hint: "use ls, inspect, build, import or rm")
        }
        var command = ImageCommand(action: action, stateFolder: Defaults.stateFolder(environment))
        command.imagesFolder = environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) }
        command.recipes = environment["AIRLOCK_RECIPES"].map { URL(fileURLWithPath: $0) }
        var reader = ArgumentReader(Array(arguments.dropFirst()))
        while let option = reader.next() {
            guard let name = option.name else {
                command.names.append(option.word)
                continue
            }
            switch name {
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--images":
                command.imagesFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--recipes" where action == "build":
                command.recipes = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--connect": command.connectURI = try reader.value(for: name, inline: option.inline)
            case "--force" where action == "build" || action == "import": command.force = true
            case "--json" where action == "ls": command.json = true
            case "--ssh-user" where action == "import":
                command.options.sshUser = try reader.value(for: name, inline: option.inline)
            case "--min-memory" where action == "import":
                let bytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name, defaultUnit: 1 << 20)
                command.options.minimumMemoryMiB = Int(bytes >> 20)
            default:
                throw UsageError(
                    "unknown option '\(Terminal.escape(name))' for 'image \(action)'",
                    hint: "see 'airlock image --help'")
            }
        }
        let wanted = ["ls": 0, "inspect": 1, "build": 1, "import": 2, "rm": 1][action] ?? 0
        guard command.names.count == wanted else {
            let shape = ["ls": "no argument", "import": "NAME FILE"][action] ?? "one NAME"
            throw UsageError("'image \(action)' takes \(shape)", hint: "see 'airlock image --help'")
        }
        return command
    }

    var catalog: ImageCatalog {
        ImageCatalog(root: imagesFolder ?? stateFolder.appendingPathComponent("images"))
    }

    func run(signals: SignalRelay) throws -> Int32 {
        do {
            return try perform(signals: signals)
        } catch let error as AirlockError where error.code == .invalidState {
            // In use: nothing is wrong, but not now.
            var text = "Error: \(error.description)"
            if let hint = error.hint { text += "\n\(hint)" }
            Output.note(text)
            return ExitCode.tryLater
        }
    }

    private func perform(signals: SignalRelay) throws -> Int32 {
        let stop = StopFlag()
        signals.onFirst = { stop.set() }
        switch action {
        case "ls": return list()
        case "inspect": return try inspect(names[0])
        case "build": return try build(names[0], signals: signals, stop: stop)
        case "import":
            let image = try catalog.importDisk(
                names[0], file: URL(fileURLWithPath: names[1]), options: options, replace: force,
                connectURI: connectURI, isCancelled: stop.isSet)
            print(
                "imported image \(image.name) (\(image.diskBytes.map(Sizes.format) ?? "?") disk, \(image.contentHash))")
            return 0
        default:
            try catalog.remove(names[0], connectURI: connectURI)
            print("removed image \(names[0])")
            return 0
        }
    }

    private func list() -> Int32 {
        let catalog = self.catalog
        var rows: [[String]] = []
        var objects: [[String: Any]] = []
        for name in catalog.names() {
            do {
                let image = try catalog.image(named: name)
                rows.append([
                    name, image.boot.rawValue, image.keyInjection.rawValue,
                    image.diskBytes.map(Sizes.format) ?? "-", "\(image.minimumMemoryMiB) MiB", image.built ?? "-",
                ])
                objects.append(Self.object(image))
            } catch {
                rows.append([name, "broken", "-", "-", "-", error.description])
                objects.append(["name": name, "error": error.description])
            }
        }
        if json {
            Output.write(Rendering.json(objects), to: STDOUT_FILENO)
        } else if rows.isEmpty {
            Output.note("airlock: no images in \(catalog.root.path); build one with 'airlock image build tiny'")
        } else {
            print(Rendering.table(["NAME", "BOOT", "KEYS", "DISK", "MIN MEMORY", "BUILT"], rows), terminator: "")
        }
        return 0
    }

    private func inspect(_ name: String) throws -> Int32 {
        let image = try catalog.image(named: name)
        var object = Self.object(image)
        object["folder"] = image.folder.path
        if let disk = image.diskURL {
            object["diskPath"] = disk.path
        }
        Output.write(Rendering.json(object), to: STDOUT_FILENO)
        return 0
    }

    private func build(_ name: String, signals: SignalRelay, stop: StopFlag) throws -> Int32 {
        guard ImageCatalog.isValidName(name) else {
            throw UsageError(
                "'\(Terminal.escape(name))' is not a valid image name",
                hint: "image names are letters, digits, '.', '_' and '-'")
        }
        guard let recipes = recipes ?? Self.findRecipes(name) else {
            throw UsageError(
                "cannot find the recipe folder for image '\(name)'",
                hint: "pass --recipes DIR (the folder holding \(name)/build.sh), or set AIRLOCK_RECIPES")
        }
        // Ctrl-C reaches the recipe through the terminal; SIGTERM is passed on.
        let child = ChildSlot()
        signals.onFirst = {
            stop.set()
            child.signal(SIGTERM)
        }
        let outcome = try catalog.build(
            name, recipes: recipes, force: force, connectURI: connectURI, isCancelled: stop.isSet
        ) { child.set($0) }
        switch outcome {
        case .upToDate(let image):
            print("image \(name) is up to date (recipe \(image.recipeHash ?? "?")); --force rebuilds it")
        case .built(let image):
            print("built image \(name) (\(image.contentHash))")
        }
        return 0
    }

    /// The recipes folder of the checkout the running binary was built in
    /// (`.build/<config>/airlock` under it), or `./images`.
    static func findRecipes(_ name: String) -> URL? {
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var folder = binary.deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = folder.appendingPathComponent("images")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("\(name)/build.sh").path) {
                return candidate
            }
            folder = folder.deletingLastPathComponent()
        }
        let local = URL(fileURLWithPath: "images")
        return FileManager.default.fileExists(atPath: local.appendingPathComponent("\(name)/build.sh").path)
            ? local.standardizedFileURL : nil
    }

    private static func object(_ image: Image) -> [String: Any] {
        var object: [String: Any] = [
            "name": image.name, "boot": image.boot.rawValue, "sshUser": image.sshUser,
            "keyInjection": image.keyInjection.rawValue, "minimumMemoryMiB": image.minimumMemoryMiB,
            "contentHash": image.contentHash,
        ]
        object["kernel"] = image.kernel
        object["initrd"] = image.initrd
        object["cmdline"] = image.cmdline
        object["disk"] = image.disk
        object["diskBytes"] = image.diskBytes
        object["recipeHash"] = image.recipeHash
        object["built"] = image.built
        object["importedFrom"] = image.importedFrom
        object["packages"] = image.packages
        return object
    }
}

/// The PID of a running child, for a signal handler to pass a signal on to.
private final class ChildSlot: @unchecked Sendable {
    // @unchecked: the PID is behind the lock.
    private let lock = NSLock()
    private var pid: pid_t = 0

    func set(_ pid: pid_t) {
        lock.withLock { self.pid = pid }
    }

    func signal(_ number: Int32) {
        let pid = lock.withLock { self.pid }
        if pid > 0 {
            kill(pid, number)
        }
    }
}

/// Set once by a signal handler, read by the work it stops.
private final class StopFlag: @unchecked Sendable {
    // @unchecked: the flag is behind the lock.
    private let lock = NSLock()
    private var stopped = false

    func set() {
        lock.withLock { stopped = true }
    }

    @Sendable func isSet() -> Bool {
        lock.withLock { stopped }
    }
}
