"""Recorded experience for offline learning: :class:`OfflineDataset` (flat rows, whole per-slot episodes), built
by :class:`EpisodeRecorder`, stored in Minari's format by :func:`save_dataset` / :func:`load_dataset`, checked
against an env by :func:`check_dataset_matches`."""

from shoal.datasets.episodes import OfflineDataset
from shoal.datasets.matching import check_dataset_matches
from shoal.datasets.minari_io import load_dataset, save_dataset
from shoal.datasets.recorder import EpisodeRecorder

__all__ = ["EpisodeRecorder", "OfflineDataset", "check_dataset_matches", "load_dataset", "save_dataset"]
