"""cloud coordinator service."""
