import Foundation

/// A guest image: its manifest plus where its files live.
///
/// Kernels and initramfs files sit in the image's own folder of the catalog;
/// a base disk is a volume of the catalog's storage pool and is never
/// written: every job boots from an overlay on it.
public struct Image: Sendable, Codable, Equatable {
    /// How the guest starts.
    public enum Boot: String, Sendable, Codable {
        /// Direct kernel boot: `kernel`, `initrd` and `cmdline` from the manifest.
        case kernel
        /// The disk's own boot loader, started by the firmware (cloud images).
        case disk
    }

    /// How the guest learns its per-job keys.
    public enum KeyInjection: String, Sendable, Codable {
        /// A file handed over through QEMU's fw_cfg (Airlock's own images).
        case fwcfg
        /// A NoCloud seed disk read by cloud-init (cloud images).
        case cloudInit = "cloud-init"
    }

    public var name: String
    public var boot: Boot
    public var kernel: String?
    public var initrd: String?
    /// The base disk's volume name in the catalog's pool.
    public var disk: String?
    /// The base disk's size as the guest sees it, in bytes.
    public var diskBytes: Int64?
    public var cmdline: String?
    public var sshUser: String
    public var keyInjection: KeyInjection
    public var minimumMemoryMiB: Int
    public var contentHash: String
    public var recipeHash: String?
    public var built: String?
    /// Where an imported image came from.
    public var importedFrom: String?
    /// The Debian packages (name_version) a recipe built the image from.
    public var packages: [String]?

    /// The folder the manifest was read from. Not part of the manifest.
    public var folder: URL = URL(fileURLWithPath: "/")
    /// The folder of the catalog's storage pool. Not part of the manifest.
    public var poolFolder: URL = URL(fileURLWithPath: "/")

    enum CodingKeys: String, CodingKey {
        case name, boot, kernel, initrd, disk, diskBytes, cmdline, sshUser, keyInjection, minimumMemoryMiB
        case contentHash, recipeHash, built, importedFrom, packages
    }

    public var kernelURL: URL? { kernel.map { folder.appendingPathComponent($0) } }
    public var initrdURL: URL? { initrd.map { folder.appendingPathComponent($0) } }
    public var diskURL: URL? { disk.map { poolFolder.appendingPathComponent($0) } }
}

extension Image {
    /// Checks that a job's memory and disk suit the image.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` saying what to change.
    public func checkFits(_ spec: JobSpec) throws(AirlockError) {
        guard spec.memoryMiB >= minimumMemoryMiB else {
            throw AirlockError(
                .invalidArgument,
                "image '\(name)' needs at least \(minimumMemoryMiB) MiB of memory, "
                    + "the job asks for \(spec.memoryMiB) MiB",
                hint: "raise --memory to \(minimumMemoryMiB)M or more")
        }
        guard let wanted = spec.diskBytes else { return }
        guard disk != nil else {
            throw AirlockError(
                .invalidArgument, "image '\(name)' has no disk (its root lives in memory), so --disk cannot apply",
                hint: "drop --disk, or use an image with a disk such as 'debian'")
        }
        if let diskBytes, wanted < diskBytes {
            throw AirlockError(
                .invalidArgument,
                "image '\(name)' has a \(Sizes.format(diskBytes)) disk; --disk cannot shrink it to "
                    + Sizes.format(wanted),
                hint: "give at least \(diskBytes >> 20)M, or leave --disk out")
        }
    }
}

/// The images under one folder: `<root>/<name>/manifest.json` each, and the
/// storage pool `<root>/.pool` holding their base disks and the jobs' overlays.
public struct ImageCatalog: Sendable {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    /// The folder of the libvirt storage pool for base disks and overlays.
    public var poolFolder: URL { root.appendingPathComponent(".pool") }

    /// Names of the images that have a manifest, sorted.
    public func names() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return entries.filter {
            Self.isValidName($0)
                && FileManager.default.fileExists(
                    atPath: root.appendingPathComponent($0).appendingPathComponent("manifest.json").path)
        }.sorted()
    }

    /// Loads an image and checks that its files are there.
    ///
    /// - Throws: `AirlockError` `.notFound` for an unknown name (listing the
    ///   known ones), `.imageInvalid` for a broken manifest or missing files.
    public func image(named name: String) throws(AirlockError) -> Image {
        try Self.checkName(name)
        let folder = root.appendingPathComponent(name)
        let manifestURL = folder.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: manifestURL.path) else {
            let known = names()
            let list = known.isEmpty ? "none are built" : "known images: \(known.joined(separator: ", "))"
            throw AirlockError(
                .notFound, "unknown image '\(name)' in '\(root.path)' (\(list))",
                hint: "see 'airlock image ls'; build an image with 'airlock image build NAME' or import a disk "
                    + "with 'airlock image import NAME FILE'")
        }
        var image = try Self.decodeManifest(data, of: name, at: manifestURL)
        image.folder = folder
        image.poolFolder = poolFolder
        try check(image)
        return image
    }

    /// Reads a manifest, naming the file and the problem when it is broken.
    static func decodeManifest(_ data: Data, of name: String, at file: URL) throws(AirlockError) -> Image {
        do {
            return try JSONDecoder().decode(Image.self, from: data)
        } catch {
            throw AirlockError(
                .imageInvalid, "the manifest of image '\(name)' cannot be read",
                hint: "rebuild or re-import the image",
                cause: ManifestError(description: "\(file.path): \(error)"))
        }
    }

    /// Checks that a loaded manifest is whole and its files are readable.
    func check(_ image: Image) throws(AirlockError) {
        let name = image.name
        var files: [(String, URL?)] = []
        switch image.boot {
        case .kernel:
            guard image.kernel != nil, image.initrd != nil, image.cmdline != nil else {
                throw AirlockError(
                    .imageInvalid,
                    "image '\(name)' boots its kernel directly but its manifest lacks "
                        + "kernel, initrd or cmdline", hint: "rebuild the image")
            }
            files = [(image.kernel ?? "", image.kernelURL), (image.initrd ?? "", image.initrdURL)]
        case .disk:
            guard image.disk != nil else {
                throw AirlockError(
                    .imageInvalid, "image '\(name)' boots from its disk but its manifest names no disk",
                    hint: "re-import the image")
            }
        }
        if let disk = image.disk {
            files.append((disk, image.diskURL))
        }
        for (file, url) in files {
            guard !file.isEmpty, !file.contains("/"), file != "..", file != ".", let url,
                FileManager.default.isReadableFile(atPath: url.path)
            else {
                throw AirlockError(
                    .imageInvalid,
                    "image '\(name)' is missing its file '\(file)' in '\(url?.deletingLastPathComponent().path ?? "")'",
                    hint: image.importedFrom == nil ? "rebuild the image" : "re-import the image")
            }
        }
    }

    /// Image names are single path components made of safe characters, and
    /// never start with a dot (the catalog's own folders do) or `airlock-`
    /// (the jobs' overlays in the pool do).
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.hasPrefix(".") && !name.hasPrefix("airlock-")
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
    }

    static func checkName(_ name: String) throws(AirlockError) {
        guard isValidName(name) else {
            throw AirlockError(
                .invalidArgument, "'\(name)' is not a valid image name",
                hint: "image names are up to 64 letters, digits, '.', '_' and '-', and start with neither '.' "
                    + "nor 'airlock-'")
        }
    }
}

struct ManifestError: Error, CustomStringConvertible, Sendable {
    let description: String
}
