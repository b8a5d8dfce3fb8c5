"""The worker's wire protocol: final observations travel through shared memory, not through the pipe."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import shoal.vector
from shoal.vector.worker import restore_final_observations, stash_final_observations
from tests.vector import envs_for_tests as envs

pytestmark = pytest.mark.timeout(60)


def test_final_observations_move_to_their_rows_and_come_back_as_copies() -> None:
    final = np.zeros((4, 3), np.float32)
    row_1 = np.array([1.0, 2.0, 3.0], np.float32)
    row_3 = np.array([4.0, 5.0, 6.0], np.float32)
    odd = np.array([1.0, 2.0], np.float32)  # not a row of ``final``: left to pickling
    pairs = [(1, {"final_observation": row_1, "episode": {"return": 1.0}}), (2, {"seed": 7}),
             (3, {"final_observation": row_3}), (0, {"final_observation": odd}),
             (2, {"final_observation": np.zeros(3, np.float64)})]  # another dtype: left to pickling too
    moved = stash_final_observations(pairs, final)
    assert moved == [0, 2]
    np.testing.assert_array_equal(final[1], row_1)
    np.testing.assert_array_equal(final[3], row_3)
    assert pairs[0][1]["final_observation"] is None and pairs[2][1]["final_observation"] is None
    assert pairs[3][1]["final_observation"] is odd
    # What crosses the pipe holds no row arrays any more.
    received = pickle.loads(pickle.dumps((pairs, moved)))
    restore_final_observations(*received, final)
    got = received[0]
    np.testing.assert_array_equal(got[0][1]["final_observation"], row_1)
    np.testing.assert_array_equal(got[2][1]["final_observation"], row_3)
    np.testing.assert_array_equal(got[3][1]["final_observation"], odd)
    assert got[0][1]["episode"] == {"return": 1.0} and got[1][1] == {"seed": 7}
    assert list(got[0][1]) == ["final_observation", "episode"]  # key order kept
    final[:] = -1.0  # the shared rows are reused by the next episode ends: what was received is a copy
    np.testing.assert_array_equal(got[0][1]["final_observation"], row_1)


def test_multiprocessing_final_observations_survive_later_episode_ends() -> None:
    """Each final observation handed out equals the serial backend's and stays valid while the shared rows are
    reused by later episodes."""
    kept: dict[str, list[tuple[int, int, np.ndarray, bytes]]] = {}
    for backend, kwargs in (("serial", {}), ("multiprocessing", {"num_workers": 2})):
        with shoal.vector.make(envs.cartpole, 4, backend=backend, seed=3, **kwargs) as vecenv:
            vecenv.reset()
            rng = np.random.default_rng(0)
            kept[backend] = []
            for step in range(200):
                infos = vecenv.step(rng.integers(0, 2, 4))[4]
                for row, info in enumerate(infos):
                    if "final_observation" in info:
                        final = info["final_observation"]
                        kept[backend].append((step, row, final, final.tobytes()))
    assert len(kept["serial"]) >= 20
    assert [(s, r, b) for s, r, _, b in kept["multiprocessing"]] == [(s, r, b) for s, r, _, b in kept["serial"]]
    for _, _, final, at_the_time in kept["multiprocessing"]:
        assert final.tobytes() == at_the_time


def test_stashing_leaves_the_envs_own_info_dict_alone() -> None:
    final = np.zeros((2, 2), np.float32)
    theirs = {"final_observation": np.ones(2, np.float32), "kept": 1}  # e.g. a dict the env returns every step
    pairs = [(1, theirs)]
    assert stash_final_observations(pairs, final) == [0]
    assert pairs[0][1]["final_observation"] is None and pairs[0][1]["kept"] == 1
    np.testing.assert_array_equal(theirs["final_observation"], [1.0, 1.0])
    np.testing.assert_array_equal(final[1], [1.0, 1.0])
