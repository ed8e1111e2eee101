"""Source connectors: HTTP, SQL and file clients, the source registry and incremental state."""
