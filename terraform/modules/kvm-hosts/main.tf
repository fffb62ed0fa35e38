# KVM hosts for Airlock on Google Compute Engine.
#
# Why GCE with nested virtualization: Airlock needs /dev/kvm, and bare-metal
# offers elsewhere mean reserving whole servers, often by the month. A GCE
# VM with nested virtualization gives a working /dev/kvm on an ordinary
# instance billed per second, created for an hour's batch and deleted after.
# The price is speed: each guest runs under two hypervisors, so it boots
# and does I/O slower than on bare metal. For short untrusted jobs on
# demand that is the better trade; hosts busy all day are worth pricing on
# bare metal.

locals {
  # europe-west4-a -> europe-west4
  region = regex("^(.+)-[a-z]$", var.zone)[0]

  # The firewall rules find the hosts by this network tag.
  host_tag = "${var.name_prefix}-host"

  create_network = var.network == null
  network        = local.create_network ? google_compute_network.hosts[0].self_link : var.network
  subnetwork     = local.create_network ? google_compute_subnetwork.hosts[0].self_link : var.subnetwork

  # N1 spans CPU generations back to Sandy Bridge, and nested virtualization
  # needs Haswell or later; the other accepted families are all newer.
  min_cpu_platform = var.min_cpu_platform != null ? var.min_cpu_platform : (
    startswith(var.machine_type, "n1-") ? "Intel Haswell" : null
  )

  resource_labels = merge(var.labels, { "airlock-role" = "kvm-host" })

  # What outputs.tf needs of each host, in host order.
  hosts = [
    for index, instance in google_compute_instance.host : {
      name        = instance.name
      public_ip   = google_compute_address.host[index].address
      internal_ip = instance.network_interface[0].network_ip
    }
  ]
}

# A network of their own, so that no other rule or VM shares it.

resource "google_compute_network" "hosts" {
  count = local.create_network ? 1 : 0

  project                 = var.project
  name                    = "${var.name_prefix}-net"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "hosts" {
  count = local.create_network ? 1 : 0

  project       = var.project
  name          = "${var.name_prefix}-subnet"
  region        = local.region
  network       = google_compute_network.hosts[0].id
  ip_cidr_range = var.subnet_cidr
}

# Ingress: SSH from the controller and nothing else. Guests never get a
# public port: each guest's SSH is forwarded to the host's 127.0.0.1 only,
# and the controller reaches it through its SSH session to the host.

resource "google_compute_firewall" "ssh_from_controller" {
  project     = var.project
  name        = "${var.name_prefix}-ssh-from-controller"
  network     = local.network
  description = "Airlock controller to its KVM hosts: SSH (libvirt's qemu+ssh and guest SSH through the host)."
  direction   = "INGRESS"
  priority    = 900

  source_ranges = [var.controller_cidr]
  target_tags   = [local.host_tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

# A new network already denies all other ingress. This rule makes the same
# true in a shared network given through var.network, where broad allow
# rules (such as the default network's SSH from anywhere) have a lower
# precedence (a higher number) than this one.
resource "google_compute_firewall" "deny_other_ingress" {
  project     = var.project
  name        = "${var.name_prefix}-deny-other-ingress"
  network     = local.network
  description = "Airlock KVM hosts take no ingress but the controller's SSH."
  direction   = "INGRESS"
  priority    = 1000

  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.host_tag]

  deny {
    protocol = "all"
  }
}

# Static addresses: hosts_file names hosts by IP, and an ephemeral IP would
# change whenever a host is stopped and started again (a Spot VM after
# preemption, for one).
resource "google_compute_address" "host" {
  count = var.host_count

  project = var.project
  region  = local.region
  name    = "${var.name_prefix}-${count.index + 1}"
}

resource "google_compute_instance" "host" {
  count = var.host_count

  project          = var.project
  zone             = var.zone
  name             = "${var.name_prefix}-${count.index + 1}"
  machine_type     = var.machine_type
  min_cpu_platform = local.min_cpu_platform
  tags             = [local.host_tag]
  labels           = local.resource_labels

  # Changing the machine type or CPU platform needs a stop and start.
  allow_stopping_for_update = true

  advanced_machine_features {
    enable_nested_virtualization = true
  }

  boot_disk {
    initialize_params {
      image  = var.image
      size   = var.disk_size_gb
      type   = var.disk_type
      labels = local.resource_labels
    }
  }

  network_interface {
    network    = local.network
    subnetwork = local.subnetwork

    access_config {
      nat_ip = google_compute_address.host[count.index].address
    }
  }

  # Google's Debian images do not ship cloud-init, so a user-data key would
  # be ignored; their guest agent runs startup-script instead, as root, at
  # every boot.
  metadata = {
    startup-script = templatefile("${path.module}/host-setup.sh.tftpl", {
      ssh_user       = var.ssh_user
      ssh_public_key = trimspace(var.ssh_public_key)
    })

    # Project-wide SSH keys would let other people's keys in.
    block-project-ssh-keys = "TRUE"
  }

  # No service_account block, so the host gets no service account: it calls
  # no Google API, and a machine that runs untrusted guests should hold no
  # cloud credentials for its metadata server to hand out.

  scheduling {
    provisioning_model = var.spot ? "SPOT" : "STANDARD"
    preemptible        = var.spot
    automatic_restart  = !var.spot
    # A preempted Spot host is stopped, not deleted, so its disk (base
    # images) and static address survive for a restart.
    instance_termination_action = var.spot ? "STOP" : null
    on_host_maintenance         = var.spot ? "TERMINATE" : null
  }

  lifecycle {
    precondition {
      condition     = local.guest_vcpus != null && local.guest_memory_gib != null
      error_message = "Cannot tell the size of machine type ${var.machine_type}: set max_guest_vcpus and max_guest_memory_gb."
    }
    precondition {
      condition     = local.guest_memory_gib == null ? true : local.guest_memory_gib >= 1
      error_message = "Too little memory is left for guests on ${var.machine_type}: pick a larger machine type or set max_guest_memory_gb."
    }
  }
}
