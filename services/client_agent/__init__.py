"""client agent service."""
