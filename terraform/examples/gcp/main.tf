# Example: a few KVM hosts for one Airlock controller. Copy
# terraform.tfvars.example to terraform.tfvars, fill it in, then
# `terraform init` and `terraform apply` (see terraform/README.md).

provider "google" {
  project = var.project
  zone    = var.zone
}

module "kvm_hosts" {
  source = "../../modules/kvm-hosts"

  project      = var.project
  zone         = var.zone
  host_count   = var.host_count
  name_prefix  = var.name_prefix
  machine_type = var.machine_type
  disk_size_gb = var.disk_size_gb
  spot         = var.spot
  labels       = var.labels

  controller_cidr      = var.controller_cidr
  ssh_user             = var.ssh_user
  ssh_public_key       = file(pathexpand(var.ssh_public_key_file))
  ssh_private_key_path = var.ssh_private_key_path
}
