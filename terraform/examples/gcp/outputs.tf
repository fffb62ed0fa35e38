output "hosts_file" {
  description = "JSON for `airlock host import`: terraform output -raw hosts_file > hosts.json"
  value       = module.kvm_hosts.hosts_file
}

output "addresses" {
  description = "Each host's public and internal IPv4 address, by host name."
  value       = module.kvm_hosts.addresses
}

output "ssh_keyscan_command" {
  description = "Prints the hosts' SSH host keys for the controller's known_hosts."
  value       = module.kvm_hosts.ssh_keyscan_command
}
