"""gRPC services of the FFA-LoRA federation (coordinator, edge aggregator, client agent) and the CLI."""
