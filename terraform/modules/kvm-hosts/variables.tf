# Where the hosts go.

variable "project" {
  description = "Google Cloud project ID that owns the hosts, their addresses and (when created here) their network."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a project ID (6 to 30 lowercase letters, digits and hyphens), not a project name or number."
  }
}

variable "zone" {
  description = "Zone for every host, such as europe-west4-a. The region (for addresses and the subnet) is taken from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone))
    error_message = "zone must look like europe-west4-a."
  }
}

# What each host is.

variable "host_count" {
  description = "How many KVM hosts to create."
  type        = number
  default     = 1

  validation {
    condition     = var.host_count >= 0 && var.host_count <= 50 && floor(var.host_count) == var.host_count
    error_message = "host_count must be a whole number from 0 to 50."
  }
}

variable "name_prefix" {
  description = "Start of every resource name; hosts are named PREFIX-1, PREFIX-2, ... and that name is also the host's name in Airlock."
  type        = string
  default     = "airlock-kvm"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be 1 to 40 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "machine_type" {
  description = "Intel machine type for the hosts, such as n2-standard-8. Families n1, n2, c2 and c3 are accepted: the ones Google documents nested virtualization on."
  type        = string
  default     = "n2-standard-8"

  validation {
    # Google documents nested virtualization for Intel CPUs; refusing other
    # families here is quicker than an apply that fails halfway.
    condition     = can(regex("^(n1|n2|c2|c3)-", var.machine_type))
    error_message = "machine_type must be an Intel type of family n1, n2, c2 or c3 (nested virtualization)."
  }
}

variable "min_cpu_platform" {
  description = "Minimum CPU platform, such as \"Intel Cascade Lake\". Null picks one when the family needs it: n1 gets \"Intel Haswell\", the oldest platform with nested virtualization."
  type        = string
  default     = null
}

variable "image" {
  description = "Boot image. Debian 12 is what Airlock is developed and tested on."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "disk_size_gb" {
  description = "Boot disk size in GB. It holds Airlock's base images and every running guest's overlay, so size it for images plus the busiest hour's guests."
  type        = number
  default     = 100

  validation {
    condition     = var.disk_size_gb >= 20 && floor(var.disk_size_gb) == var.disk_size_gb
    error_message = "disk_size_gb must be a whole number of at least 20."
  }
}

variable "disk_type" {
  description = "Boot disk type: pd-balanced (the default) or pd-ssd. Guest overlays do many small writes, so pd-standard is refused."
  type        = string
  default     = "pd-balanced"

  validation {
    condition     = contains(["pd-balanced", "pd-ssd"], var.disk_type)
    error_message = "disk_type must be pd-balanced or pd-ssd."
  }
}

variable "spot" {
  description = "Run the hosts as Spot VMs: much cheaper, but Google may stop one at any time and the jobs on it fail (Airlock's job retries then apply)."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels put on every Google Cloud resource and, together with cloud, zone and machine, on every host in hosts_file."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for key, value in var.labels :
      can(regex("^[a-z][-_a-z0-9]{0,62}$", key)) && can(regex("^[-_a-z0-9]{0,63}$", value))
    ])
    error_message = "labels keys and values must be lowercase letters, digits, '-' and '_' (keys start with a letter), at most 63 characters."
  }
}

# What Airlock may use on each host.

variable "max_guest_vcpus" {
  description = "vCPUs Airlock may give guests on one host. Null means all of the machine's vCPUs."
  type        = number
  default     = null

  validation {
    condition     = var.max_guest_vcpus == null ? true : var.max_guest_vcpus >= 1 && floor(var.max_guest_vcpus) == var.max_guest_vcpus
    error_message = "max_guest_vcpus must be a whole number of at least 1."
  }
}

variable "max_guest_memory_gb" {
  description = "GiB of memory Airlock may give guests on one host. Null means the machine's memory less an eighth (at least 2 GiB) kept for the host."
  type        = number
  default     = null

  validation {
    condition     = var.max_guest_memory_gb == null ? true : var.max_guest_memory_gb >= 1 && floor(var.max_guest_memory_gb) == var.max_guest_memory_gb
    error_message = "max_guest_memory_gb must be a whole number of at least 1."
  }
}

# Who may reach the hosts, and how.

variable "controller_cidr" {
  description = "The only IPv4 range allowed to open SSH to the hosts: the Airlock controller's public address, such as 198.51.100.7/32."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", var.controller_cidr)) && can(cidrhost(var.controller_cidr, 0)) && !startswith(var.controller_cidr, "0.0.0.0/")
    error_message = "controller_cidr must be an IPv4 CIDR such as 198.51.100.7/32, and not 0.0.0.0/0."
  }
}

variable "ssh_user" {
  description = "Account created on every host for the controller; it is in the libvirt and kvm groups and logs in with ssh_public_key only."
  type        = string
  default     = "airlock"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,30}$", var.ssh_user)) && var.ssh_user != "root"
    error_message = "ssh_user must be a lowercase Unix account name other than root."
  }
}

variable "ssh_public_key" {
  description = "The controller's SSH public key, one line of an authorized_keys file (such as the contents of id_ed25519.pub)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+=*( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one public key line, such as \"ssh-ed25519 AAAA... me@laptop\"."
  }
}

variable "ssh_private_key_path" {
  description = "Absolute path, on the controller, of the private key matching ssh_public_key. When set, every URI in hosts_file names it (keyfile=...); when null, ssh picks its usual keys."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_private_key_path == null ? true : can(regex("^/[-A-Za-z0-9._/+]+$", var.ssh_private_key_path))
    error_message = "ssh_private_key_path must be an absolute path of letters, digits and . _ - + / only (it goes into a URI unescaped)."
  }
}

# Network.

variable "network" {
  description = "Existing VPC network (name or self link) to put the hosts in. Null creates a dedicated network and subnet that hold nothing else."
  type        = string
  default     = null
}

variable "subnetwork" {
  description = "Existing subnetwork (name or self link) in the zone's region, used only with network; leave null for an auto-mode network."
  type        = string
  default     = null
}

variable "subnet_cidr" {
  description = "Internal IPv4 range of the dedicated subnet, used only when network is null."
  type        = string
  default     = "10.64.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR such as 10.64.0.0/24."
  }
}
