"""Whether a dataset fits an env: the spaces its rows were recorded in against the spaces the env emulates.

Two observation layouts fit when they store the same space (types registered with
:func:`shoal.emulation.register_space` compared through the leaf space they are stored as), so a flat row of one is a
flat row of the other, byte for byte. Action layouts fit when their native action spaces are equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gymnasium import spaces

from shoal.emulation.actions import ActionLayout
from shoal.emulation.layout import Layout, compile_layout, format_path, is_registered, space_handler
from shoal.errors import DatasetError

if TYPE_CHECKING:
    from shoal.datasets.episodes import OfflineDataset

__all__ = ["check_dataset_matches", "stored_space"]


def stored_space(space: spaces.Space) -> spaces.Space:
    """``space`` with every leaf of a registered type replaced by the built-in space it is stored as (the same
    space when there is none): the space a dataset file can describe, with the same flat rows."""
    if isinstance(space, spaces.Dict):
        return spaces.Dict({key: stored_space(sub) for key, sub in space.spaces.items()})
    if isinstance(space, spaces.Tuple):
        return spaces.Tuple(tuple(stored_space(sub) for sub in space.spaces))
    if is_registered(type(space)):
        return space_handler(space).as_space(space)
    return space


def check_dataset_matches(dataset: OfflineDataset, obs_layout: Layout | spaces.Space,
                          action_layout: ActionLayout | spaces.Space, *, env: str = "the env") -> None:
    """Refuse ``dataset`` unless its rows are observations and actions of ``obs_layout`` / ``action_layout``.

    Args:
        dataset: the dataset.
        obs_layout: the env's per-slot observation layout (e.g. ``vecenv.obs_layout``) or space.
        action_layout: the env's action layout (e.g. ``vecenv.action_layout``) or native action space.
        env: how to name the env in the message (e.g. its id).

    Raises:
        DatasetError: naming the dataset's space and the env's, observation or action.
    """
    obs_layout = compile_layout(obs_layout)
    if not isinstance(action_layout, ActionLayout):
        action_layout = ActionLayout(action_layout)
    name = dataset.metadata.get("path") or dataset.metadata.get("dataset_id") or "the dataset"
    recorded_on = dataset.metadata.get("env")
    where = f" (recorded on {recorded_on!r})" if recorded_on else ""
    ours, theirs = stored_space(dataset.obs_layout.space), stored_space(obs_layout.space)
    if ours != theirs or dataset.obs_layout.flat_dtype != obs_layout.flat_dtype or (
            dataset.obs_layout.flat_size != obs_layout.flat_size):
        raise DatasetError(
            f"{name}{where} holds observations of {ours!r} (rows of {dataset.obs_layout.flat_dtype}"
            f"[{dataset.obs_layout.flat_size}]), but {env} observes {theirs!r} (rows of {obs_layout.flat_dtype}"
            f"[{obs_layout.flat_size}]); use a dataset recorded on this env, or train on the env it was recorded on")
    for ours_leaf, theirs_leaf in zip(dataset.obs_layout.leaves, obs_layout.leaves, strict=True):
        # equal Text spaces may number their characters in different orders (their codes then differ)
        if ours_leaf.kind == "text" and ours_leaf.space.character_list != theirs_leaf.space.character_list:
            raise DatasetError(
                f"{name}{where} codes the text at {format_path(ours_leaf.path)} with the characters "
                f"{''.join(ours_leaf.space.character_list)!r}, but {env} with "
                f"{''.join(theirs_leaf.space.character_list)!r} (in that order); use a dataset recorded on this env")
    if dataset.action_layout.space != action_layout.space:
        raise DatasetError(
            f"{name}{where} holds actions of {dataset.action_layout.space!r}, but {env} takes actions of "
            f"{action_layout.space!r}; use a dataset recorded on this env, or train on the env it was recorded on")
