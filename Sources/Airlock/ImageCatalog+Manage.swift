import Foundation
import Libvirt

/// Building, importing and removing images.
///
/// Every change is made beside the catalog and then moved into place, so
/// that a job starting meanwhile sees the old image or the new one, never
/// half of either. Changes to one catalog take its lock one at a time.
/// Base disks are named after their content; a base that no manifest names
/// and no job's overlay uses is removed by the next change.
extension ImageCatalog {
    /// What `build` did.
    public enum BuildOutcome: Sendable {
        case upToDate(Image)
        case built(Image)
    }

    /// The largest base disk taken, as the guest sees it.
    public static let maximumDiskBytes: Int64 = 2 << 40

    /// How an imported disk is run.
    public struct ImportOptions: Sendable {
        public var sshUser = "root"
        public var minimumMemoryMiB = 512
        public init() {}
    }

    /// SHA-256 over a recipe folder: each regular file's relative path and
    /// contents, in path order.
    public static func recipeHash(of folder: URL) throws(AirlockError) -> String {
        var files: [String] = []
        if let walker = FileManager.default.enumerator(atPath: folder.path) {
            while let relative = walker.nextObject() as? String {
                var info = stat()
                if lstat(folder.appendingPathComponent(relative).path, &info) == 0, info.st_mode & S_IFMT == S_IFREG {
                    files.append(relative)
                }
            }
        }
        var stream = Data()
        for relative in files.sorted() {
            guard let contents = FileManager.default.contents(atPath: folder.appendingPathComponent(relative).path)
            else {
                throw AirlockError(.invalidArgument, "cannot read '\(relative)' of the recipe in '\(folder.path)'")
            }
            stream.append(Data("\(relative)\u{0}\(contents.count)\u{0}".utf8))
            stream.append(contents)
        }
        return Digest.sha256(stream)
    }

    /// Builds image `name` by running `recipes/<name>/build.sh OUTDIR`,
    /// unless the image was built from the same recipe (and `force` is off).
    ///
    /// - Parameters:
    ///   - name: The image, and the recipe folder's name.
    ///   - recipes: The folder holding one folder per recipe.
    ///   - force: Build even when the recipe is unchanged.
    ///   - connectURI: The libvirt host whose pool receives the base disk.
    ///   - isCancelled: Asked between steps; true stops the build.
    ///   - started: Told the recipe's PID, so that a signal can be passed on.
    /// - Returns: Whether the image was built or already up to date.
    /// - Throws: `AirlockError`: `.notFound` for an unknown recipe,
    ///   `.guestFailed` when the recipe fails, `.cancelled` when it was
    ///   interrupted, `.imageInvalid` when its output is not a whole image.
    public func build(
        _ name: String, recipes: URL, force: Bool, connectURI: String, isCancelled: () -> Bool = { false },
        started: (pid_t) -> Void = { _ in }
    ) throws(AirlockError) -> BuildOutcome {
        try Self.checkName(name)
        let recipe = recipes.appendingPathComponent(name)
        let script = recipe.appendingPathComponent("build.sh")
        guard FileManager.default.isReadableFile(atPath: script.path) else {
            let known = ((try? FileManager.default.contentsOfDirectory(atPath: recipes.path)) ?? []).filter {
                FileManager.default.fileExists(atPath: recipes.appendingPathComponent("\($0)/build.sh").path)
            }.sorted()
            throw AirlockError(
                .notFound,
                "no recipe for image '\(name)' in '\(recipes.path)' (recipes: "
                    + (known.isEmpty ? "none" : known.joined(separator: ", ")) + ")",
                hint: "give the folder holding <name>/build.sh with --recipes")
        }
        let lock = try CatalogLock(catalog: self)
        defer { lock.release() }
        let recipeHash = try Self.recipeHash(of: recipe)
        if !force, let current = try? image(named: name), current.recipeHash == recipeHash {
            return .upToDate(current)
        }

        let staging = try makeStaging(name)
        defer { try? FileManager.default.removeItem(at: staging) }
        let pid = try Spawn.start("/bin/sh", ["sh", script.path, staging.path], output: nil, newProcessGroup: false)
        started(pid)
        let status = Spawn.wait(pid)
        guard status == 0, !isCancelled() else {
            if isCancelled() || status == 130 || status == 128 + SIGTERM || status == 128 + SIGINT {
                throw AirlockError(.cancelled, "the build of image '\(name)' was interrupted")
            }
            throw AirlockError(
                .guestFailed, "the recipe of image '\(name)' failed (\(script.path) exited with status \(status))",
                hint: "its output above says why")
        }

        let manifestURL = staging.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: manifestURL.path) else {
            throw AirlockError(.imageInvalid, "the recipe of image '\(name)' wrote no manifest.json")
        }
        var image = try Self.decodeManifest(data, of: name, at: manifestURL)
        guard image.name == name else {
            throw AirlockError(
                .imageInvalid, "the recipe in '\(recipe.path)' built an image named '\(image.name)', not '\(name)'")
        }
        image.recipeHash = recipeHash
        image.built = Self.now()
        image.importedFrom = nil
        if let disk = image.disk {
            guard !disk.contains("/") else {
                throw AirlockError(.imageInvalid, "the recipe of image '\(name)' names a disk outside its folder")
            }
            let staged = staging.appendingPathComponent(disk)
            let published = try publishDisk(staged, of: name, move: true, isCancelled: isCancelled)
            image.disk = published.volume
            image.diskBytes = published.bytes
        }
        return .built(try publish(image, from: staging, connectURI: connectURI))
    }

    /// Imports a disk image file (qcow2 or raw, such as a cloud image) as
    /// image `name`, booting from its own disk with a cloud-init seed. The
    /// file is copied; it is never changed.
    ///
    /// - Throws: `AirlockError`: `.exists` when the name is taken and
    ///   `replace` is off; `.imageInvalid` for a file that is not a whole,
    ///   self-contained disk image.
    public func importDisk(
        _ name: String, file: URL, options: ImportOptions = ImportOptions(), replace: Bool, connectURI: String,
        isCancelled: () -> Bool = { false }
    ) throws(AirlockError) -> Image {
        try Self.checkName(name)
        var info = stat()
        guard lstat(file.path, &info) == 0 else {
            throw AirlockError(.notFound, "cannot read disk image '\(file.path)'", cause: POSIXFailure())
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw AirlockError(
                .invalidArgument,
                info.st_mode & S_IFMT == S_IFLNK
                    ? "'\(file.path)' is a symbolic link" : "'\(file.path)' is not a regular file",
                hint: "give the path of the qcow2 or raw disk image file itself")
        }
        guard options.minimumMemoryMiB >= 64 else {
            throw AirlockError(.invalidArgument, "a minimum memory of \(options.minimumMemoryMiB) MiB is too little")
        }
        guard !options.sshUser.isEmpty,
            options.sshUser.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
        else {
            throw AirlockError(.invalidArgument, "'\(options.sshUser)' is not a valid user name")
        }
        let lock = try CatalogLock(catalog: self)
        defer { lock.release() }
        if !replace, FileManager.default.fileExists(atPath: root.appendingPathComponent("\(name)/manifest.json").path) {
            throw AirlockError(
                .exists, "image '\(name)' already exists", hint: "choose another name, or pass --force to replace it")
        }
        let staging = try makeStaging(name)
        defer { try? FileManager.default.removeItem(at: staging) }
        let published = try publishDisk(file, of: name, move: false, isCancelled: isCancelled)
        let image = Image(
            name: name, boot: .disk, kernel: nil, initrd: nil, disk: published.volume, diskBytes: published.bytes,
            cmdline: nil, sshUser: options.sshUser, keyInjection: .cloudInit,
            minimumMemoryMiB: options.minimumMemoryMiB, contentHash: "", recipeHash: nil, built: Self.now(),
            importedFrom: file.resolvingSymlinksInPath().path, packages: nil)
        return try publish(image, from: staging, connectURI: connectURI)
    }

    /// Removes an image and, unless a running job still uses it, its base disk.
    ///
    /// - Throws: `AirlockError` `.notFound` for an unknown image,
    ///   `.invalidState` while jobs run on it.
    public func remove(_ name: String, connectURI: String) throws(AirlockError) {
        try Self.checkName(name)
        let lock = try CatalogLock(catalog: self)
        defer { lock.release() }
        let folder = root.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("manifest.json").path) else {
            throw AirlockError(.notFound, "unknown image '\(name)' in '\(root.path)'")
        }
        let connection = try Connection.airlock(uri: connectURI)
        defer { connection.close() }
        let pool = DiskPool(catalog: self)
        if let disk = try? image(named: name).diskURL {
            let users = pool.jobs(using: disk.resolvingSymlinksInPath(), in: try pool.open(connection))
            guard users.isEmpty else {
                throw AirlockError(
                    .invalidState, "image '\(name)' is in use by job \(users.joined(separator: ", "))",
                    hint: "try again when the jobs have ended ('airlock cancel ID' stops a queued job)")
            }
        }
        let trash = root.appendingPathComponent(".removed-\(name)-\(UInt32.random(in: 0...UInt32.max))")
        guard rename(folder.path, trash.path) == 0 else {
            throw AirlockError(.internalError, "cannot remove '\(folder.path)'", cause: POSIXFailure())
        }
        try? FileManager.default.removeItem(at: trash)
        sweepBases(connection: connection)
    }

    // MARK: - Steps

    /// A new folder beside the catalog's images for one change.
    private func makeStaging(_ name: String) throws(AirlockError) -> URL {
        let staging = root.appendingPathComponent(".staging-\(name)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        } catch {
            throw AirlockError(.internalError, "cannot create '\(staging.path)'", cause: error)
        }
        _ = chmod(staging.path, 0o755)
        return staging
    }

    /// Checks a disk image and puts a self-contained qcow2 copy of it in
    /// the pool, named after the image and its content, read-only.
    ///
    /// - Parameters:
    ///   - file: The disk image.
    ///   - name: The image it is for; it begins the volume's name.
    ///   - move: Take a qcow2 file as it is (a recipe's own output) rather
    ///     than copying it.
    ///   - isCancelled: Asked between steps; true stops the change.
    /// - Returns: The volume name and the size the guest sees.
    /// - Throws: `AirlockError` `.imageInvalid` for a file that cannot be a base disk.
    private func publishDisk(
        _ file: URL, of name: String, move: Bool, isCancelled: () -> Bool
    ) throws(AirlockError) -> (
        volume: String, bytes: Int64
    ) {
        let pool = DiskPool(catalog: self)
        do {
            try FileManager.default.createDirectory(at: pool.folder, withIntermediateDirectories: true)
        } catch {
            throw AirlockError(.internalError, "cannot create '\(pool.folder.path)'", cause: error)
        }
        _ = chmod(pool.folder.path, 0o711)
        // Checked and converted is a private copy, so that nobody can swap
        // the file between the checks and the conversion.
        var source = file
        if !move {
            source = pool.folder.appendingPathComponent(".incoming-source-\(UInt32.random(in: 0...UInt32.max))")
            try Self.copy(file, to: source, isCancelled: isCancelled)
        }
        defer {
            if !move { unlink(source.path) }
        }
        try Self.checkCancelled(isCancelled, name)
        let info = try QEMUImage.info(source, named: file)
        guard info.format == "qcow2" || info.format == "raw" else {
            throw AirlockError(
                .imageInvalid, "'\(file.path)' is a \(info.format) image; Airlock takes qcow2 or raw",
                hint: "convert it first: qemu-img convert -O qcow2 '\(file.path)' disk.qcow2")
        }
        // A backing file would let an image name any file on the host as its content.
        guard info.backingFilename == nil else {
            throw AirlockError(
                .imageInvalid, "'\(file.path)' is an overlay on '\(info.backingFilename ?? "")', not a whole disk",
                hint: "flatten it first: qemu-img convert -O qcow2 '\(file.path)' flat.qcow2")
        }
        guard info.dataFile == nil else {
            throw AirlockError(
                .imageInvalid, "'\(file.path)' keeps its data in the external file '\(info.dataFile ?? "")'",
                hint: "import a self-contained copy: qemu-img convert -O qcow2 '\(file.path)' whole.qcow2")
        }
        guard info.formatSpecific?.data?.corrupt != true else {
            throw AirlockError(.imageInvalid, "qemu-img marks '\(file.path)' as corrupt")
        }
        guard info.virtualSize <= Self.maximumDiskBytes else {
            throw AirlockError(
                .imageInvalid,
                "'\(file.path)' is a \(Sizes.format(info.virtualSize)) disk; at most \(Sizes.format(Self.maximumDiskBytes)) is taken"
            )
        }
        guard info.encrypted != true else {
            throw AirlockError(.imageInvalid, "'\(file.path)' is encrypted", hint: "import an unencrypted copy")
        }
        guard info.virtualSize > 0 else {
            throw AirlockError(.imageInvalid, "'\(file.path)' is an empty disk")
        }
        if info.format == "qcow2" {
            try QEMUImage.check(source, named: file)
        } else {
            try Self.checkBootSector(source, named: file)
        }
        let incoming = pool.folder.appendingPathComponent(".incoming-\(UInt32.random(in: 0...UInt32.max)).qcow2")
        defer { unlink(incoming.path) }
        if move && info.format == "qcow2" && rename(source.path, incoming.path) == 0 {
            // Taken as it is: it was made for this pool.
        } else {
            try QEMUImage.convert(source, format: info.format, to: incoming, named: file)
        }
        try Self.checkCancelled(isCancelled, name)
        let hash = try Digest.sha256(files: [incoming])
        let volume = "\(name)-\(hash.dropFirst("sha256:".count).prefix(16)).qcow2"
        let target = pool.folder.appendingPathComponent(volume)
        guard rename(incoming.path, target.path) == 0 else {
            throw AirlockError(.internalError, "cannot place the base disk '\(target.path)'", cause: POSIXFailure())
        }
        QEMUUser.protectBase(target)
        return (volume, info.virtualSize)
    }

    /// A raw disk that a firmware is to boot must end its first sector in
    /// the boot signature; anything else (a truncated or foreign file)
    /// would only hang at boot.
    private static func checkBootSector(_ source: URL, named file: URL) throws(AirlockError) {
        guard let handle = FileHandle(forReadingAtPath: source.path) else {
            throw AirlockError(.imageInvalid, "cannot read '\(file.path)'")
        }
        defer { try? handle.close() }
        let sector = (try? handle.read(upToCount: 512)) ?? Data()
        guard sector.count == 512, sector[510] == 0x55, sector[511] == 0xAA else {
            throw AirlockError(
                .imageInvalid,
                "'\(file.path)' is not a bootable disk: neither a qcow2 image nor a raw disk with a boot sector",
                hint: "import a qcow2 or raw image of a whole disk (not a partition, not a truncated copy)")
        }
    }

    /// Copies a regular file, keeping its holes. The file is opened once,
    /// without following a link and without blocking on a FIFO, and must
    /// be a regular file then; its size then is all that is read.
    private static func copy(_ file: URL, to target: URL, isCancelled: () -> Bool) throws(AirlockError) {
        let source = open(file.path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard source >= 0 else {
            throw AirlockError(.invalidArgument, "cannot open '\(file.path)'", cause: POSIXFailure())
        }
        defer { close(source) }
        var info = stat()
        guard fstat(source, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw AirlockError(
                .invalidArgument, "'\(file.path)' is not a regular file",
                hint: "give the path of the qcow2 or raw disk image file itself")
        }
        let output = open(target.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard output >= 0 else {
            throw AirlockError(.internalError, "cannot create '\(target.path)'", cause: POSIXFailure())
        }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var left = Int64(info.st_size)
        while left > 0 {
            try checkCancelled(isCancelled, file.lastPathComponent)
            let count = read(source, &buffer, Int(min(Int64(buffer.count), left)))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw AirlockError(.imageInvalid, "cannot read '\(file.path)'", cause: POSIXFailure())
            }
            left -= Int64(count)
            // Runs of zeros become holes, as they are in most disk images.
            if buffer[0..<count].allSatisfy({ $0 == 0 }) {
                lseek(output, off_t(count), SEEK_CUR)
                continue
            }
            var done = 0
            while done < count {
                let written = buffer[done..<count].withUnsafeBytes { write(output, $0.baseAddress, $0.count) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else {
                    throw AirlockError(.internalError, "cannot write '\(target.path)'", cause: POSIXFailure())
                }
                done += written
            }
        }
        guard ftruncate(output, info.st_size) == 0 else {
            throw AirlockError(.internalError, "cannot write '\(target.path)'", cause: POSIXFailure())
        }
    }

    /// Linux's renameat2 with RENAME_EXCHANGE (which Swift's Glibc does not
    /// export): swaps two paths at once. False where it is not available.
    private static func exchange(_ first: URL, _ second: URL) -> Bool {
        typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
        guard let symbol = dlsym(nil, "renameat2") else { return false }
        let renameat2 = unsafeBitCast(symbol, to: RenameAt2.self)
        let renameExchange: UInt32 = 1 << 1
        return renameat2(AT_FDCWD, first.path, AT_FDCWD, second.path, renameExchange) == 0
    }

    private static func checkCancelled(_ isCancelled: () -> Bool, _ what: String) throws(AirlockError) {
        if isCancelled() {
            throw AirlockError(.cancelled, "the change of image '\(what)' was interrupted; nothing was changed")
        }
    }

    /// Moves a finished image into place, replacing any old one.
    private func publish(_ image: Image, from staging: URL, connectURI: String) throws(AirlockError) -> Image {
        var image = image
        image.folder = staging
        image.poolFolder = poolFolder
        try check(image)
        image.contentHash = try Digest.sha256(
            files: [image.kernelURL, image.initrdURL, image.diskURL].compactMap { $0 })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            try encoder.encode(image).write(to: staging.appendingPathComponent("manifest.json"))
        } catch {
            throw AirlockError(.internalError, "cannot write the manifest of image '\(image.name)'", cause: error)
        }
        for file in [image.kernelURL, image.initrdURL].compactMap({ $0 }) {
            _ = chmod(file.path, 0o644)
        }
        let folder = root.appendingPathComponent(image.name)
        let replaced = (try? self.image(named: image.name))?.disk
        let old = root.appendingPathComponent(".old-\(image.name)-\(UInt32.random(in: 0...UInt32.max))")
        // One exchange, so that a job starting now finds the old image or
        // the new one; the old one is then in the staging folder's place.
        if FileManager.default.fileExists(atPath: folder.path), Self.exchange(staging, folder) {
            try? FileManager.default.removeItem(at: staging)
        } else if FileManager.default.fileExists(atPath: folder.path)
            && rename(folder.path, old.path) != 0
        {
            throw AirlockError(.internalError, "cannot replace '\(folder.path)'", cause: POSIXFailure())
        } else if rename(staging.path, folder.path) != 0 {
            let failure = POSIXFailure()
            _ = rename(old.path, folder.path)
            throw AirlockError(.internalError, "cannot move the new image to '\(folder.path)'", cause: failure)
        }
        try? FileManager.default.removeItem(at: old)
        if let connection = try? Connection(uri: connectURI) {
            sweepBases(connection: connection, keep: replaced)
            connection.close()
        }
        image.folder = folder
        return image
    }

    /// Removes base disks no manifest names and no overlay uses, and tells
    /// libvirt about the pool's new contents.
    ///
    /// - Parameters:
    ///   - connection: The libvirt host of the pool.
    ///   - keep: A base just replaced: a job that read the old manifest a
    ///     moment ago may be about to make its overlay on it. The next
    ///     change removes it.
    private func sweepBases(connection: Connection, keep: String? = nil) {
        let pool = DiskPool(catalog: self)
        guard let storage = try? pool.open(connection) else { return }
        // Manifests are read as they are: a broken image still owns its
        // disk, and while any manifest cannot be read, nothing is removed.
        var named: Set<String> = []
        for name in names() {
            let file = root.appendingPathComponent("\(name)/manifest.json")
            guard let data = FileManager.default.contents(atPath: file.path),
                let manifest = try? Self.decodeManifest(data, of: name, at: file)
            else {
                try? storage.refresh()
                return
            }
            if let disk = manifest.disk {
                named.insert(disk)
            }
        }
        if let keep {
            named.insert(keep)
        }
        let users = pool.overlayUsers(in: storage)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: pool.folder.path)) ?? []
        for file in files where !file.hasPrefix(".") && !file.hasPrefix("airlock-") && !named.contains(file) {
            let path = pool.folder.appendingPathComponent(file)
            var info = stat()
            if lstat(path.path, &info) == 0, info.st_mode & S_IFMT == S_IFREG,
                users[xmlEscaped(path.resolvingSymlinksInPath().path)] == nil
            {
                unlink(path.path)
            }
        }
        try? storage.refresh()
    }

    static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date())
    }
}

/// An exclusive lock on one catalog's changes (flock on `<root>/.lock`).
struct CatalogLock {
    private let fd: Int32

    /// Takes the lock, making the catalog folder if needed, and removes
    /// what an earlier change left when it was killed: with the lock held,
    /// no other change is under way.
    init(catalog: ImageCatalog) throws(AirlockError) {
        if !FileManager.default.fileExists(atPath: catalog.root.path) {
            do {
                try FileManager.default.createDirectory(at: catalog.root, withIntermediateDirectories: true)
            } catch {
                throw AirlockError(
                    .internalError, "cannot create the image folder '\(catalog.root.path)'", cause: error)
            }
            // QEMU's user passes through to the kernels and the pool.
            _ = chmod(catalog.root.path, 0o755)
        }
        let path = catalog.root.appendingPathComponent(".lock").path
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw AirlockError(.internalError, "cannot open the image lock '\(path)'", cause: POSIXFailure())
        }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        Self.removeScratch(in: catalog.root, prefixes: [".staging-", ".old-", ".removed-"])
        Self.removeScratch(in: catalog.poolFolder, prefixes: [".incoming-"])
    }

    private static func removeScratch(in folder: URL, prefixes: [String]) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        where prefixes.contains(where: { name.hasPrefix($0) }) {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
        }
    }

    func release() {
        close(fd)
    }
}
