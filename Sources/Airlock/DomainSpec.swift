import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Everything that goes into one job's libvirt domain, as typed values.
///
/// `xml()` renders the libvirt domain XML. The guest gets one user-mode NIC
/// (QEMU's `restrict=on`: no egress, host included) whose SSH port is
/// forwarded to 127.0.0.1 only, a serial console, a virtio RNG, the job's
/// own disks (an overlay on a read-only base, a seed) and nothing else: no
/// folders shared with the host, no guest agent, no graphics, no USB.
public struct DomainSpec: Sendable, Equatable {
    /// libvirt's XML namespace for Airlock's `<metadata>` element.
    public static let metadataNamespace = "https://airlock.invalid/xmlns/job/1"

    public var name: String
    public var jobID: String
    public var accelerator: Accelerator
    public var vcpus: Int
    public var memoryMiB: Int
    /// Direct kernel boot when set; else the firmware boots the first disk.
    public var kernel: String?
    public var initrd: String?
    public var cmdline: String?
    /// The host file handed to the guest as fw_cfg `opt/airlock/keys`.
    public var keysFile: String?
    /// The guest's disks, in order: vda, vdb, ...
    public var disks: [Disk] = []
    /// The host port on 127.0.0.1 forwarded to the guest's port 22.
    public var sshPort: Int
    /// The state folder of the process that made the guest, recorded in the
    /// metadata so that `airlock gc` on one state folder leaves alone the
    /// guests of another.
    public var stateFolder: String?

    public init(
        name: String, jobID: String, accelerator: Accelerator, vcpus: Int, memoryMiB: Int, kernel: String?,
        initrd: String?, cmdline: String?, keysFile: String?, sshPort: Int
    ) {
        self.name = name
        self.jobID = jobID
        self.accelerator = accelerator
        self.vcpus = vcpus
        self.memoryMiB = memoryMiB
        self.kernel = kernel
        self.initrd = initrd
        self.cmdline = cmdline
        self.keysFile = keysFile
        self.sshPort = sshPort
    }

    /// One virtio disk of the guest.
    public struct Disk: Sendable, Equatable {
        /// The host file.
        public var path: String
        /// `qcow2` or `raw`.
        public var format: String
        /// The read-only base of a qcow2 overlay. QEMU reads it as its own
        /// user; libvirt leaves its owner and mode alone (it is shared).
        public var backingPath: String?
        public var readOnly = false

        public init(path: String, format: String, backingPath: String? = nil, readOnly: Bool = false) {
            self.path = path
            self.format = format
            self.backingPath = backingPath
            self.readOnly = readOnly
        }
    }

    /// The state folder named in a domain's Airlock metadata, or nil when it names none.
    public static func stateFolder(inMetadata text: String) -> String? {
        // libvirt hands back the element as it stored it: one tag, its
        // attributes in double quotes, entities for the XML metacharacters.
        guard text.hasPrefix("<"), let start = text.range(of: " state=\"") else { return nil }
        let rest = text[start.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return decodeEntities(rest[..<end])
    }

    /// Undoes XML's escapes in an attribute value: the five named entities
    /// and numeric character references (libxml2 writes `&#xEB;` for ë).
    /// Nil when a reference is malformed.
    static func decodeEntities(_ text: Substring) -> String? {
        let named = ["quot": "\"", "apos": "'", "lt": "<", "gt": ">", "amp": "&"]
        var out = ""
        var rest = text
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semicolon = rest[amp...].firstIndex(of: ";") else { return nil }
            let name = rest[rest.index(after: amp)..<semicolon]
            if let character = named[String(name)] {
                out += character
            } else if name.hasPrefix("#x") || name.hasPrefix("#X"), let value = UInt32(name.dropFirst(2), radix: 16),
                let scalar = Unicode.Scalar(value)
            {
                out.unicodeScalars.append(scalar)
            } else if name.hasPrefix("#"), let value = UInt32(name.dropFirst()), let scalar = Unicode.Scalar(value) {
                out.unicodeScalars.append(scalar)
            } else {
                return nil
            }
            rest = rest[rest.index(after: semicolon)...]
        }
        return out + rest
    }

    /// Whether the guest may reach any address (`--egress open`); else it
    /// reaches nothing, the host included.
    public var egressOpen = false

    /// The QEMU `-netdev` value: user-mode networking, SSH on loopback, and
    /// no egress unless it is open.
    public var netdev: String {
        "user,id=airlocknet,restrict=\(egressOpen ? "off" : "on"),hostfwd=tcp:127.0.0.1:\(sshPort)-:22"
    }

    /// The QEMU `-device` value for the NIC. q35 needs an explicit bus and
    /// slot, and no option ROM is loaded (the guest boots its kernel directly).
    public var nicDevice: String {
        "virtio-net-pci,netdev=airlocknet,romfile=,bus=pcie.0,addr=0x10"
    }

    /// Renders the domain XML.
    public func xml() -> String {
        let domain = XMLElement(name: "domain")
        domain.addAttribute(attribute("type", accelerator.libvirtDomainType))
        domain.addNamespace(namespace("qemu", "http://libvirt.org/schemas/domain/qemu/1.0"))

        domain.addChild(element("name", name))
        let metadata = XMLElement(name: "metadata")
        let job = XMLElement(name: "airlock:job")
        job.addNamespace(namespace("airlock", Self.metadataNamespace))
        job.addAttribute(attribute("id", jobID))
        if let stateFolder {
            job.addAttribute(attribute("state", stateFolder))
        }
        metadata.addChild(job)
        domain.addChild(metadata)

        domain.addChild(element("memory", String(memoryMiB), ["unit": "MiB"]))
        domain.addChild(element("vcpu", String(vcpus)))

        if let keysFile {
            let sysinfo = element("sysinfo", nil, ["type": "fwcfg"])
            sysinfo.addChild(element("entry", nil, ["name": "opt/airlock/keys", "file": keysFile]))
            domain.addChild(sysinfo)
        }

        let os = XMLElement(name: "os")
        os.addChild(element("type", "hvm", ["arch": "x86_64", "machine": "q35"]))
        if let kernel {
            os.addChild(element("kernel", kernel))
            if let initrd {
                os.addChild(element("initrd", initrd))
            }
            if let cmdline {
                os.addChild(element("cmdline", cmdline))
            }
        }
        domain.addChild(os)

        let features = XMLElement(name: "features")
        features.addChild(XMLElement(name: "acpi"))
        domain.addChild(features)
        if accelerator == .kvm {
            domain.addChild(element("cpu", nil, ["mode": "host-passthrough"]))
        }

        // Any attempt to reboot, power off or crash ends the guest for good.
        domain.addChild(element("on_poweroff", "destroy"))
        domain.addChild(element("on_reboot", "destroy"))
        domain.addChild(element("on_crash", "destroy"))

        let devices = XMLElement(name: "devices")
        devices.addChild(element("serial", nil, ["type": "pty"]))
        devices.addChild(element("console", nil, ["type": "pty"]))
        let rng = element("rng", nil, ["model": "virtio"])
        rng.addChild(element("backend", "/dev/urandom", ["model": "random"]))
        // On the root bus, like the NIC: a guest finds devices behind bridges later.
        rng.addChild(
            element("address", nil, ["type": "pci", "domain": "0", "bus": "0", "slot": "0x11", "function": "0"]))
        devices.addChild(rng)
        for (index, disk) in disks.enumerated() {
            devices.addChild(diskElement(disk, index: index))
        }
        devices.addChild(element("controller", nil, ["type": "usb", "model": "none"]))
        devices.addChild(element("memballoon", nil, ["model": "none"]))
        domain.addChild(devices)

        // libvirt 9 has no XML for restrict=on user networking, so the NIC is
        // passed to QEMU directly.
        let commandline = XMLElement(name: "qemu:commandline")
        for argument in ["-netdev", netdev, "-device", nicDevice] {
            commandline.addChild(element("qemu:arg", nil, ["value": argument]))
        }
        domain.addChild(commandline)

        let document = XMLDocument(rootElement: domain)
        return document.xmlString(options: [.nodePrettyPrint])
    }

    /// A virtio disk on the root bus (slots 0x12 on), the first one booted
    /// by the firmware when there is no kernel to boot directly.
    private func diskElement(_ disk: Disk, index: Int) -> XMLElement {
        let node = element("disk", nil, ["type": "file", "device": "disk"])
        node.addChild(element("driver", nil, ["name": "qemu", "type": disk.format]))
        node.addChild(element("source", nil, ["file": disk.path]))
        if let backing = disk.backingPath {
            let store = element("backingStore", nil, ["type": "file"])
            store.addChild(element("format", nil, ["type": "qcow2"]))
            let source = element("source", nil, ["file": backing])
            source.addChild(element("seclabel", nil, ["model": "dac", "relabel": "no"]))
            store.addChild(source)
            store.addChild(XMLElement(name: "backingStore"))
            node.addChild(store)
        }
        let letter = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(index)))
        node.addChild(element("target", nil, ["dev": "vd" + letter, "bus": "virtio"]))
        if disk.readOnly {
            node.addChild(XMLElement(name: "readonly"))
        }
        if index == 0 && kernel == nil {
            node.addChild(element("boot", nil, ["order": "1"]))
        }
        node.addChild(
            element(
                "address", nil,
                [
                    "type": "pci", "domain": "0", "bus": "0", "slot": String(format: "0x%02x", 0x12 + index),
                    "function": "0",
                ]))
        return node
    }

    private func element(_ name: String, _ text: String?, _ attributes: [String: String] = [:]) -> XMLElement {
        let node = XMLElement(name: name)
        if let text {
            node.stringValue = text
        }
        for key in attributes.keys.sorted() {
            node.addAttribute(attribute(key, attributes[key] ?? ""))
        }
        return node
    }

    private func attribute(_ name: String, _ value: String) -> XMLNode {
        let node = XMLNode(kind: .attribute)
        node.name = name
        node.stringValue = value
        return node
    }

    private func namespace(_ prefix: String, _ uri: String) -> XMLNode {
        let node = XMLNode(kind: .namespace)
        node.name = prefix
        node.stringValue = uri
        return node
    }
}

/// How guests are run: hardware virtualization or QEMU's emulator.
public enum Accelerator: String, Sendable, Codable, CaseIterable {
    case kvm
    case tcg

    /// The `type` attribute of a libvirt `<domain>`.
    public var libvirtDomainType: String {
        self == .kvm ? "kvm" : "qemu"
    }
}
