"""Benchmarks that run the services (quality, rank, reliability, load)."""
