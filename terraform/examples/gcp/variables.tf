variable "project" {
  description = "Google Cloud project ID to create the hosts in."
  type        = string
}

variable "zone" {
  description = "Zone for the hosts; pick one near the controller."
  type        = string
  default     = "europe-west4-a"
}

variable "host_count" {
  description = "How many KVM hosts to create."
  type        = number
  default     = 2
}

variable "name_prefix" {
  description = "Start of every resource name; hosts become PREFIX-1, PREFIX-2, ..."
  type        = string
  default     = "airlock-kvm"
}

variable "machine_type" {
  description = "Intel machine type with nested virtualization (families n1, n2, c2, c3)."
  type        = string
  default     = "n2-standard-8"
}

variable "disk_size_gb" {
  description = "Boot disk size in GB: base images plus the overlays of the guests running at once."
  type        = number
  default     = 100
}

variable "spot" {
  description = "Use Spot VMs: cheaper, but a preempted host fails the jobs running on it."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Extra labels for the Google Cloud resources and for every host in hosts_file."
  type        = map(string)
  default     = {}
}

variable "controller_cidr" {
  description = "The controller's public IPv4 address as a CIDR (such as 198.51.100.7/32); the only source allowed to SSH in."
  type        = string
}

variable "ssh_user" {
  description = "Account the controller logs in as on every host."
  type        = string
  default     = "airlock"
}

variable "ssh_public_key_file" {
  description = "Path, on the machine running Terraform, of the controller's SSH public key."
  type        = string
  default     = "~/.ssh/id_ed25519.pub"
}

variable "ssh_private_key_path" {
  description = "Absolute path, on the controller, of the matching private key, written into every URI as keyfile=...; null leaves the choice to ssh."
  type        = string
  default     = null
}
