"""Benchmarks: each module exposes ``main(argv)`` printing one JSON object."""
