"""Contracts (single source of truth per source dataset), conform, validation suites and the unified model."""
