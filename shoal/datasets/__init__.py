"""Recorded experience for offline learning: :class:`OfflineDataset` (flat rows, whole per-slot episodes)."""

from shoal.datasets.episodes import OfflineDataset

__all__ = ["OfflineDataset"]
