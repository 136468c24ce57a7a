"""edge aggregator service."""
