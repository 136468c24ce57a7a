"""Tools around the federation: the ``ffa-lora`` command line, the local demo, the centralized
baseline, the privacy planner, the container launcher, the benchmarks and the fault-injection
harness that the benchmarks and the tests share.

Nothing in :mod:`services` or :mod:`ffa_lora` imports this package; it imports both.
"""
