"""Per-slot episode statistics: return and length, reported once when a slot's episode ends."""

from __future__ import annotations

__all__ = ["EpisodeStats"]


class EpisodeStats:
    """Accumulates the undiscounted return and the length of the current episode of every slot.

    Args:
        num_slots: number of slots tracked.
    """

    def __init__(self, num_slots: int) -> None:
        # Plain lists: per-step scalar updates on them are several times cheaper than on numpy arrays.
        self.returns = [0.0] * num_slots
        self.lengths = [0] * num_slots

    def add(self, slot: int, reward: float) -> None:
        """Record one action of ``slot`` that earned ``reward``."""
        self.returns[slot] += float(reward)
        self.lengths[slot] += 1

    def add_reward(self, slot: int, reward: float) -> None:
        """Record reward that reached ``slot`` without an action of its own (e.g. while others moved)."""
        self.returns[slot] += reward

    def finish(self, slot: int) -> dict[str, float]:
        """End ``slot``'s episode: return ``{"return": R, "length": L}`` and reset its counters."""
        stats = {"return": float(self.returns[slot]), "length": int(self.lengths[slot])}
        self.returns[slot] = 0.0
        self.lengths[slot] = 0
        return stats

    def reset(self) -> None:
        """Forget every running episode."""
        self.returns = [0.0] * len(self.returns)
        self.lengths = [0] * len(self.lengths)
