"""Benchmarks: each module exposes ``main(argv)`` and prints one JSON object on stdout."""
