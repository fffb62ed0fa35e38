# How much of each host Airlock may hand to guests (hosts_file's vcpus and
# memory). Worked out from the machine type's name, so that no provider
# lookup is needed; other types need max_guest_vcpus and max_guest_memory_gb.

locals {
  # GiB of memory per vCPU of the predefined shapes of the accepted families.
  gib_per_vcpu = {
    "n1-standard" = 3.75
    "n1-highmem"  = 6.5
    "n1-highcpu"  = 0.9
    "n2-standard" = 4
    "n2-highmem"  = 8
    "n2-highcpu"  = 1
    "c2-standard" = 4
    "c3-standard" = 4
    "c3-highmem"  = 8
    "c3-highcpu"  = 2
  }

  # n2-standard-8 -> ["n2-standard", "8"]
  predefined_shape = try(regex("^([a-z0-9]+-[a-z]+)-([0-9]+)$", var.machine_type), null)
  known_shape      = local.predefined_shape == null ? false : contains(keys(local.gib_per_vcpu), local.predefined_shape[0])
  # n2-custom-6-24576 -> ["6", "24576"] (vCPUs, MiB)
  custom_shape = try(regex("^[a-z0-9]+-custom-([0-9]+)-([0-9]+)(?:-ext)?$", var.machine_type), null)

  machine_vcpus = (
    local.custom_shape != null ? tonumber(local.custom_shape[0]) :
    local.known_shape ? tonumber(local.predefined_shape[1]) :
    null
  )
  machine_memory_gib = (
    local.custom_shape != null ? floor(tonumber(local.custom_shape[1]) / 1024) :
    local.known_shape ? floor(local.machine_vcpus * local.gib_per_vcpu[local.predefined_shape[0]]) :
    null
  )

  # Every vCPU goes to guests: CPU time is shared, so a busy host only runs
  # slower. Memory is not shared that way, and running short means the OOM
  # killer ends a guest, so an eighth of it (at least 2 GiB) stays with the
  # host for its kernel, libvirtd, each QEMU's own overhead, and the page
  # cache that keeps Airlock's base images warm.
  host_reserved_gib = local.machine_memory_gib == null ? null : max(2, ceil(local.machine_memory_gib / 8))

  guest_vcpus = var.max_guest_vcpus != null ? var.max_guest_vcpus : local.machine_vcpus
  guest_memory_gib = var.max_guest_memory_gb != null ? var.max_guest_memory_gb : (
    local.machine_memory_gib == null ? null : local.machine_memory_gib - local.host_reserved_gib
  )
}
