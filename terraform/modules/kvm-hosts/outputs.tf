locals {
  # keyfile only when asked for; no_tty=1 makes ssh fail rather than wait
  # for a password or a host key question nobody is there to answer.
  uri_query = join("&", concat(
    var.ssh_private_key_path == null ? [] : ["keyfile=${var.ssh_private_key_path}"],
    ["no_tty=1"],
  ))

  # The facts win over var.labels, so hosts_file never misstates them.
  host_labels = merge(var.labels, {
    cloud   = "gcp"
    zone    = var.zone
    machine = var.machine_type
  })

  # The file `airlock host import` reads. Keep these five keys in step
  # with the reader; scripts/check_terraform.py checks them. memory is null
  # only for a machine type of unknown size, which a precondition on the
  # instances turns into a clear error before anything is made.
  hosts_file = jsonencode({
    hosts = [
      for host in local.hosts : {
        name   = host.name
        uri    = "qemu+ssh://${var.ssh_user}@${host.public_ip}/system?${local.uri_query}"
        vcpus  = local.guest_vcpus
        memory = local.guest_memory_gib == null ? null : "${local.guest_memory_gib}G"
        labels = local.host_labels
      }
    ]
  })
}

output "hosts_file" {
  description = "JSON for `airlock host import`: {\"hosts\": [{name, uri, vcpus, memory, labels}, ...]}."
  value       = local.hosts_file
}

output "host_names" {
  description = "Names of the hosts, in order."
  value       = [for host in local.hosts : host.name]
}

output "addresses" {
  description = "Each host's public (static) and internal IPv4 address, by host name."
  value = {
    for host in local.hosts : host.name => {
      public   = host.public_ip
      internal = host.internal_ip
    }
  }
}

output "ssh_keyscan_command" {
  description = "Command that prints the hosts' ed25519 SSH host keys for known_hosts (compare them with the fingerprints in each host's serial console log)."
  value       = "ssh-keyscan -t ed25519 ${join(" ", [for host in local.hosts : host.public_ip])}"
}
