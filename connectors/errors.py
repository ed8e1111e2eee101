"""Errors raised by connectors and the incremental state; messages name dataset/page/file, never values."""

from __future__ import annotations

from schemas.base import HubError


class SourceError(HubError):
    """A source could not be read (after retries); the message names the dataset and where it stopped."""

    def __init__(self, dataset: str, where: str, reason: str) -> None:
        super().__init__(f"{dataset} {where}: {reason}" if where else f"{dataset}: {reason}")
        self.dataset = dataset
        self.where = where
        self.reason = reason


class StateError(HubError):
    """Incremental state would go wrong (e.g. a watermark moving backwards)."""
