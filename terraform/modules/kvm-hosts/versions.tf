terraform {
  # startswith() and lifecycle preconditions need 1.3; 1.5 keeps the module
  # and the example root on one floor.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0, < 8.0"
    }
  }
}
