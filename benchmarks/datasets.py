"""Offline datasets on disk: shoal's save/load beside Minari writing and reading the same episodes itself.

shoal stores datasets through Minari's own HDF5 storage, adding the conversion between flat rows and the env's
native spaces (unflatten and to_native when saving; flatten and from_native when loading). The peer is Minari with
the same episodes already in native form: ``create_dataset_from_buffers`` to write, ``iterate_episodes`` to read.

Target: shoal's save and load each keep >= 0.6x Minari's own rate (the conversion costs less than Minari's I/O).

    python benchmarks/datasets.py [--steps 20000] [--envs CartPole-v1 nested] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import line, verdict
from shoal.datasets import OfflineDataset, load_dataset, save_dataset
from shoal.train.record import record_dataset

TARGET = 0.6


def _minari_buffers(dataset: OfflineDataset, path: Path) -> list:
    """The dataset's episodes as Minari episode buffers (native spaces), read back from a saved copy."""
    import minari
    from minari.data_collector import EpisodeBuffer

    episodes = minari.MinariDataset(path / "data").iterate_episodes()
    return [EpisodeBuffer(observations=e.observations, actions=e.actions, rewards=e.rewards,
                          terminations=e.terminations, truncations=e.truncations, infos=e.infos) for e in episodes]


def _best(fn: Callable[[int], None], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls ``fn(i)`` (a burst of load from another tenant slows a few)."""
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        best = min(best, time.perf_counter() - start)
    return best


def measure(env: str, steps: int, root: Path, repeats: int) -> tuple[float, float, float, float]:
    """Steps per second of shoal's save and load and of Minari's own write and read of the same episodes."""
    import minari

    dataset = record_dataset("random", env, steps, num_envs=8, seed=0)
    name = env.replace(":", "-")
    save = _best(lambda i: save_dataset(dataset, root / f"{name}-shoal-{i}"), repeats)
    ours = root / f"{name}-shoal-0"
    buffers = _minari_buffers(dataset, ours)
    theirs = minari.MinariDataset(ours / "data")
    write = _best(lambda i: minari.create_dataset_from_buffers(
        f"bench/{name}-v{i}", buffers, observation_space=theirs.observation_space, action_space=theirs.action_space,
        algorithm_name="random", author="bench", author_email="bench@example.org", code_permalink="-",
        description="-"), repeats)
    load = _best(lambda i: load_dataset(ours), repeats)
    read = _best(lambda i: list(theirs.iterate_episodes()), repeats)
    return steps / save, steps / write, steps / load, steps / read


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "nested"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each; the fastest counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        for env in args.envs:
            save_rate, write_rate, load_rate, read_rate = measure(env, args.steps, Path(tmp), args.repeats)
            print(line(f"{env}: shoal save_dataset", save_rate, "steps/s", write_rate, "Minari's write"))
            print(line(f"{env}: Minari create_dataset_from_buffers", write_rate, "steps/s"))
            print(line(f"{env}: shoal load_dataset (flat rows)", load_rate, "steps/s", read_rate, "Minari's read"))
            print(line(f"{env}: Minari iterate_episodes (native)", read_rate, "steps/s"))
            print(verdict(f"{env}: save vs Minari's write", save_rate / write_rate, TARGET))
            print(verdict(f"{env}: load vs Minari's read", load_rate / read_rate, TARGET))


if __name__ == "__main__":
    main()
