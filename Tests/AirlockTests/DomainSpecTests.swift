import Foundation
import Testing

@testable import Airlock

#if canImport(FoundationXML)
    import FoundationXML
#endif

@Suite("DomainSpec")
struct DomainSpecTests {
    let spec = DomainSpec(
        name: "airlock-abc", jobID: "abc", accelerator: .tcg, vcpus: 2, memoryMiB: 768,
        kernel: "/images/tiny/vmlinuz", initrd: "/images/tiny/initrd.img", cmdline: "console=ttyS0 quiet",
        keysFile: "/state/run/abc/keys", sshPort: 40123)

    private func parse(_ xml: String) throws -> XMLElement {
        let document = try XMLDocument(xmlString: xml)
        return try #require(document.rootElement())
    }

    private func first(_ root: XMLElement, _ path: String) throws -> XMLElement {
        try #require(try root.nodes(forXPath: path).first as? XMLElement)
    }

    @Test("the metadata names the state folder, and a domain's metadata is read back")
    func stateFolderInMetadata() {
        var owned = spec
        owned.stateFolder = "/var/lib/airlock"
        #expect(owned.xml().contains(#"id="abc" state="/var/lib/airlock""#))
        // As libvirt hands the element back: its own prefix, the same attributes.
        let returned = #"<job xmlns="\#(DomainSpec.metadataNamespace)" id="abc" state="/var/lib/airlock"/>"#
        #expect(DomainSpec.stateFolder(inMetadata: returned) == "/var/lib/airlock")
        #expect(DomainSpec.stateFolder(inMetadata: #"<job id="abc"/>"#) == nil)
        #expect(DomainSpec.stateFolder(inMetadata: "not xml") == nil)
        // libxml2 writes characters outside ASCII, and some inside, as references.
        let escaped = #"<job id="abc" state="/home/zo&#xEB;/a&amp;b&#9;c"/>"#
        #expect(DomainSpec.stateFolder(inMetadata: escaped) == "/home/zoë/a&b\tc")
        #expect(DomainSpec.stateFolder(inMetadata: #"<job state="/x&#xZZ;"/>"#) == nil)
    }

    @Test("the XML carries the name, the job id in metadata and the sizes")
    func basics() throws {
        let root = try parse(spec.xml())
        #expect(root.attribute(forName: "type")?.stringValue == "qemu")
        #expect(try first(root, "name").stringValue == "airlock-abc")
        #expect(try first(root, "vcpu").stringValue == "2")
        #expect(try first(root, "memory").stringValue == "768")
        #expect(spec.xml().contains("<airlock:job xmlns:airlock=\"\(DomainSpec.metadataNamespace)\" id=\"abc\""))
    }

    @Test("KVM guests get the host CPU; emulated ones do not")
    func acceleratorShape() throws {
        var kvm = spec
        kvm.accelerator = .kvm
        #expect(try parse(kvm.xml()).attribute(forName: "type")?.stringValue == "kvm")
        #expect(kvm.xml().contains("host-passthrough"))
        #expect(!spec.xml().contains("host-passthrough"))
    }

    @Test("the NIC is user-mode with restrict=on and SSH forwarded to loopback only")
    func networkIsClosed() throws {
        #expect(spec.netdev == "user,id=airlocknet,restrict=on,hostfwd=tcp:127.0.0.1:40123-:22")
        let args = try parse(spec.xml()).nodes(forXPath: "*[local-name()='commandline']/*").compactMap {
            ($0 as? XMLElement)?.attribute(forName: "value")?.stringValue
        }
        #expect(args == ["-netdev", spec.netdev, "-device", spec.nicDevice])
        #expect(!spec.xml().contains("<interface"))
    }

    @Test("a guest that reboots, powers off or crashes is destroyed; keys arrive by fw_cfg")
    func lifecycleAndKeys() throws {
        let root = try parse(spec.xml())
        for event in ["on_poweroff", "on_reboot", "on_crash"] {
            #expect(try first(root, event).stringValue == "destroy")
        }
        let entry = try first(root, "sysinfo/entry")
        #expect(entry.attribute(forName: "name")?.stringValue == "opt/airlock/keys")
        #expect(entry.attribute(forName: "file")?.stringValue == "/state/run/abc/keys")
    }

    @Test("no shared folders, host devices, guest agent, graphics or USB")
    func nothingShared() throws {
        let xml = spec.xml()
        for forbidden in ["<filesystem", "<hostdev", "<channel", "<graphics", "<disk", "<redirdev"] {
            #expect(!xml.contains(forbidden), "found \(forbidden)")
        }
        #expect(xml.contains("<controller model=\"none\" type=\"usb\""))
    }

    @Test("values with XML metacharacters are escaped")
    func escapes() throws {
        var odd = spec
        odd.cmdline = "a<b & c>\"d'"
        #expect(try first(try parse(odd.xml()), "os/cmdline").stringValue == odd.cmdline)
    }

    @Test("an overlay names its read-only base, left unlabelled; a firmware boot starts from the first disk")
    func disks() throws {
        var cloud = spec
        cloud.kernel = nil
        cloud.initrd = nil
        cloud.cmdline = nil
        cloud.keysFile = nil
        cloud.disks = [
            DomainSpec.Disk(path: "/p/airlock-abc.qcow2", format: "qcow2", backingPath: "/p/base.qcow2"),
            DomainSpec.Disk(path: "/run/abc/seed.iso", format: "raw", readOnly: true),
        ]
        let root = try parse(cloud.xml())
        #expect(try root.nodes(forXPath: "os/kernel").isEmpty)
        #expect(try root.nodes(forXPath: "sysinfo").isEmpty)
        let disks = try root.nodes(forXPath: "devices/disk").compactMap { $0 as? XMLElement }
        #expect(disks.count == 2)
        #expect(try first(disks[0], "source").attribute(forName: "file")?.stringValue == "/p/airlock-abc.qcow2")
        #expect(try first(disks[0], "backingStore/source").attribute(forName: "file")?.stringValue == "/p/base.qcow2")
        #expect(
            try first(disks[0], "backingStore/source/seclabel").attribute(forName: "relabel")?.stringValue == "no")
        #expect(try first(disks[0], "boot").attribute(forName: "order")?.stringValue == "1")
        #expect(try first(disks[0], "target").attribute(forName: "dev")?.stringValue == "vda")
        #expect(try first(disks[1], "target").attribute(forName: "dev")?.stringValue == "vdb")
        #expect(try disks[1].nodes(forXPath: "readonly").count == 1)
        #expect(try disks[1].nodes(forXPath: "boot").isEmpty)
        #expect(try first(disks[1], "address").attribute(forName: "slot")?.stringValue == "0x13")

        // With a kernel to boot, no disk is a boot device.
        var debian = spec
        debian.disks = [DomainSpec.Disk(path: "/p/airlock-abc.qcow2", format: "qcow2", backingPath: "/p/b.qcow2")]
        #expect(try parse(debian.xml()).nodes(forXPath: "devices/disk/boot").isEmpty)
    }
}
