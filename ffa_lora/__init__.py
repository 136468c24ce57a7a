"""FFA-LoRA federation core: the algorithms (crypto, privacy, LoRA math, rank scheduling,
de-identification, data) with no network code. The services in ``services/`` are thin gRPC
shells over this package; nothing here imports grpc or generated protos (a test enforces it).
"""

__version__ = "0.1.0"
