"""Datasets on disk in Minari's format: exact round trips, Minari reads ours, we read Minari's, broken files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from shoal.datasets import load_dataset, save_dataset
from shoal.datasets.minari_io import read_metadata
from shoal.emulation import ActionLayout, compile_layout, flatten, to_native
from shoal.envs.nested import NestedDictEnv
from shoal.errors import APIUsageError, DatasetError
from shoal.train.record import record_dataset
from tests.datasets.helpers import TextTupleEnv, assert_same_dataset

pytestmark = pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")

CASES = {
    "box-obs-discrete-actions": ("CartPole-v1", 300),
    "nested-dict-mixed-dtypes": ("nested", 120),
    "continuous-actions": ("Pendulum-v1", 250),
    "tuple-text-obs-hybrid-actions": (TextTupleEnv, 40),
    "turn-based-action-masks": ("pettingzoo.classic.tictactoe_v3", 60),
    "registered-space-as-text": ("minigrid:MiniGrid-Empty-5x5-v0", 40),  # MiniGrid's MissionSpace
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_saved_dataset_loads_back_byte_for_byte_and_minari_reads_it(case: str, tmp_path: Path) -> None:
    env, steps = CASES[case]
    dataset = record_dataset("random", env, steps, seed=3)
    path = save_dataset(dataset, tmp_path / "ds")
    back = load_dataset(path)
    assert_same_dataset(dataset, back)
    assert back.metadata["env"] == dataset.metadata["env"] and back.metadata["source"] == "random"
    # Minari's own reader sees the native spaces and values: observation i of episode 0 is to_native of its row
    theirs = minari.MinariDataset(path / "data")
    assert theirs.total_episodes == dataset.num_episodes and theirs.total_steps == dataset.num_steps
    episode = theirs[0]
    first = to_native(dataset.obs_layout, dataset.observations[1])
    _assert_leaves_equal(theirs.observation_space, first, _index(episode.observations, 1))
    action = dataset.action_layout.to_native(dataset.actions[0])
    _assert_leaves_equal(theirs.action_space, action, _index(episode.actions, 0))
    assert np.array_equal(episode.rewards, dataset.rewards[: dataset.episode_lengths[0]])
    if dataset.action_masks is not None:
        assert np.array_equal(episode.infos["action_mask"], dataset.action_masks[: dataset.episode_lengths[0] + 1])


def _index(tree: Any, i: int) -> Any:
    if isinstance(tree, dict):
        return {key: _index(value, i) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_index(value, i) for value in tree)
    return tree[i]


def _assert_leaves_equal(space: gym.Space, expected: Any, actual: Any) -> None:
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            _assert_leaves_equal(sub, expected[key], actual[key])
    elif isinstance(space, gym.spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            _assert_leaves_equal(sub, expected[i], actual[i])
    elif isinstance(space, gym.spaces.Text):
        assert expected == actual
    else:
        assert np.asarray(actual).dtype == space.dtype
        assert np.asarray(actual).tobytes() == np.asarray(expected, space.dtype).tobytes()


def test_episode_slots_agent_types_and_the_env_spec_are_stored(tmp_path: Path) -> None:
    dataset = record_dataset("random", "mpe2.simple_spread_v3", 150, env_kwargs={"max_cycles": 10}, seed=0)
    path = save_dataset(dataset, tmp_path / "spread")
    assert sorted(set(dataset.agents.tolist())) == [0, 1, 2]
    metadata = list(minari.MinariDataset(path / "data").storage.get_episode_metadata(range(dataset.num_episodes)))
    assert [m["agent"] for m in metadata] == dataset.agents.tolist()
    raw = json.loads((path / "data" / "metadata.json").read_text())
    assert raw["shoal"]["metadata"]["env"] == "mpe2.simple_spread_v3" and "env_spec" not in raw
    # a Gymnasium id made without extra keywords: Minari can rebuild the env
    cartpole = save_dataset(record_dataset("random", "CartPole-v1", 20), tmp_path / "cartpole")
    assert minari.MinariDataset(cartpole / "data").recover_environment().spec.id == "CartPole-v1"


def test_an_existing_path_is_kept_unless_overwrite(tmp_path: Path) -> None:
    first = record_dataset("random", "CartPole-v1", 30, seed=1)
    second = record_dataset("random", "CartPole-v1", 40, seed=2)
    path = save_dataset(first, tmp_path / "ds")
    with pytest.raises(APIUsageError, match=r"already exists.*overwrite"):
        save_dataset(second, path)
    assert load_dataset(path).num_steps == 30
    save_dataset(second, path, overwrite=True)
    assert load_dataset(path).num_steps == 40
    (tmp_path / "notes").mkdir()
    with pytest.raises(APIUsageError, match="not a dataset directory"):
        save_dataset(second, tmp_path / "notes", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "notes"]  # no staging directory left behind


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_foreign_minari_dataset_loads_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset written by Minari itself from a Gymnasium env with nested mixed-dtype observations (what
    ``minari.DataCollector`` stores: ``T + 1`` observations, native actions, per step)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = NestedDictEnv()
    episodes, natives = [], []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        env.action_space.seed(seed)
        while not (terms and (terms[-1] or truncs[-1])):
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
        natives.append((observations, actions))
        episodes.append(EpisodeBuffer(observations=_stack(observations), actions=_stack(actions), rewards=rewards,
                                      terminations=terms, truncations=truncs))
    minari.create_dataset_from_buffers("test/nested-v0", episodes, observation_space=env.observation_space,
                                       action_space=env.action_space, algorithm_name="random", author="shoal",
                                       author_email="shoal@example.org", code_permalink="https://example.org",
                                       description="random play")
    dataset = load_dataset("test/nested-v0")
    layout, actions = compile_layout(env.observation_space), ActionLayout(env.action_space)
    assert dataset.num_episodes == 3 and dataset.metadata["dataset_id"] == "test/nested-v0"
    rows = np.stack([flatten(layout, o) for observations, _ in natives for o in observations])
    assert dataset.observations.tobytes() == rows.tobytes()  # the emulators' own flat rows
    flat = np.stack([actions.from_native(a) for _, acts in natives for a in acts])
    assert np.array_equal(dataset.actions, flat)
    assert dataset.episode_lengths.tolist() == [len(acts) for _, acts in natives]
    assert bool(dataset.terminations[-1] or dataset.truncations[-1]) and dataset.action_masks is None


def _stack(samples: list[Any]) -> Any:
    if isinstance(samples[0], dict):
        return {key: _stack([s[key] for s in samples]) for key in samples[0]}
    return np.stack([np.asarray(s) for s in samples])


def test_a_truncated_or_corrupt_file_is_named(tmp_path: Path) -> None:
    path = save_dataset(record_dataset("random", "nested", 200), tmp_path / "ds")
    data, metadata = path / "data" / "main_data.hdf5", path / "data" / "metadata.json"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"main_data\.hdf5: cannot read .* truncated or corrupt"):
        load_dataset(path)
    data.unlink()
    with pytest.raises(DatasetError, match=r"main_data\.hdf5 is missing"):
        load_dataset(path)
    metadata.write_text("{not json")
    with pytest.raises(DatasetError, match=r"metadata\.json: cannot read .* truncated or corrupt"):
        load_dataset(path)


def test_a_dataset_naming_its_spaces_only_through_an_env_spec_is_refused(tmp_path: Path) -> None:
    """Minari would make the env the file's env_spec names (importing its entry point) to learn the spaces."""
    path = save_dataset(record_dataset("random", "CartPole-v1", 30), tmp_path / "ds")
    metadata = path / "data" / "metadata.json"
    raw = json.loads(metadata.read_text())
    del raw["observation_space"], raw["action_space"]
    metadata.write_text(json.dumps(raw))
    assert "env_spec" in raw
    with pytest.raises(DatasetError, match=r"metadata\.json does not state its observation_space and action_space "
                                           r".*does not run code a file names"):
        load_dataset(path)


def test_a_path_without_a_dataset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    with pytest.raises(DatasetError, match="holds no dataset"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"neither a dataset directory nor a local Minari dataset id.*minari "
                                           "download"):
        load_dataset("nowhere/none-v0")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_foreign_action_mask_observation_entry_becomes_the_action_masks(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """As the emulators do: ``"action_mask"`` leaves a Dict observation and becomes the legal-action masks."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    board = gym.spaces.Box(0, 1, (3, 3), np.int8)
    space = gym.spaces.Dict({"observation": board, "action_mask": gym.spaces.Box(0, 1, (9,), np.int8)})
    rng = np.random.default_rng(0)
    masks = (rng.random((5, 9)) < 0.5).astype(np.int8)
    boards = rng.integers(0, 2, (5, 3, 3)).astype(np.int8)
    episode = EpisodeBuffer(observations={"observation": boards, "action_mask": masks}, actions=np.array([0, 4, 8, 2]),
                            rewards=[0.0, 0.0, 0.0, 1.0], terminations=[False, False, False, True],
                            truncations=[False] * 4)
    minari.create_dataset_from_buffers("test/masked-v0", [episode], observation_space=space,
                                       action_space=gym.spaces.Discrete(9), algorithm_name="random", author="shoal",
                                       author_email="shoal@example.org", code_permalink="https://example.org",
                                       description="masked moves")
    dataset = load_dataset("test/masked-v0")
    assert dataset.obs_layout.space == gym.spaces.Dict({"observation": board})
    assert np.array_equal(dataset.observations.reshape(5, 3, 3), boards)
    assert np.array_equal(dataset.action_masks, masks.astype(bool))
    assert dataset.actions.tolist() == [0, 4, 8, 2] and dataset.terminations.tolist() == [False] * 3 + [True]


@pytest.mark.parametrize("corrupt", ["shoal_space", "minari_space", "shoal_metadata"])
def test_a_corrupt_metadata_file_is_named_not_the_data_file(tmp_path: Path, corrupt: str) -> None:
    path = save_dataset(record_dataset("random", "CartPole-v1", 30), tmp_path / "ds")
    metadata = path / "data" / "metadata.json"
    raw = json.loads(metadata.read_text())
    if corrupt == "shoal_space":
        raw["shoal"]["observation_space"] = {"type": "Nonsense"}
    elif corrupt == "minari_space":
        raw["observation_space"] = "{not a space"
    else:
        raw["shoal"]["metadata"] = ["not", "a", "dict"]
    metadata.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=r"metadata\.json: cannot read .* truncated or corrupt") as caught:
        load_dataset(path)
    assert "main_data.hdf5" not in str(caught.value)


def test_read_metadata_reads_metadata_json_alone(tmp_path: Path) -> None:
    dataset = record_dataset("random", "CartPole-v1", 30, seed=4)
    path = save_dataset(dataset, tmp_path / "ds")
    (path / "data" / "main_data.hdf5").unlink()  # not opened
    metadata = read_metadata(path)
    assert metadata["seed"] == 4 and metadata["env"] == "CartPole-v1" and metadata["steps"] == 30
    raw = json.loads((path / "data" / "metadata.json").read_text())
    del raw["shoal"]  # a dataset shoal did not write
    (path / "data" / "metadata.json").write_text(json.dumps(raw))
    assert read_metadata(path) == {}
    (path / "data" / "metadata.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"metadata\.json: cannot read"):
        read_metadata(path)
