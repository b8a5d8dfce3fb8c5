"""MAPPO on the PettingZoo envs PPO runs: image observations (pistonball, cooperative pong) get a bounded critic
input and minibatch, multiwalker survives its walkers falling, and a critic buffer above the limit is refused
before it is allocated."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.emulation.flatten import flatten
from shoal.emulation.layout import compile_layout
from shoal.errors import APIUsageError
from shoal.train import TrainConfig
from shoal.train.api import make_trainer
from shoal.train.mappo.trainer import (
    MINIBATCH_OBS_BYTES,
    SUMMARY_ELEMENTS,
    MAPPOTrainer,
    agent_summary,
    critic_buffer_bytes,
    critic_input_size,
    summary_size,
)

pytest.importorskip("pymunk")  # butterfly envs
pytest.importorskip("Box2D")  # multiwalker

SMALL = dict(algo="mappo", total_steps=1, log_interval=0.0, tensorboard=False, update_epochs=1)


def _train(trainer: MAPPOTrainer, updates: int) -> list[dict[str, float]]:
    stats = []
    try:
        for _ in range(updates):
            trainer.collect()
            stats.append(trainer.learn())
    finally:
        trainer.close()
    return stats


def test_summary_keeps_small_leaves_and_pools_images_per_channel() -> None:
    layout = compile_layout(spaces.Dict({
        "frame": spaces.Box(0, 255, (40, 20, 3), np.uint8),
        "pos": spaces.Box(-1.0, 1.0, (5,), np.float32),
    }))
    frame = np.zeros((2, 40, 20, 3), np.uint8)
    frame[0, :20, :, 0] = 255  # env 0: the top half of channel 0 is bright
    frame[1, :, 10:, 2] = 255  # env 1: the right half of channel 2
    pos = np.arange(10, dtype=np.float32).reshape(2, 5) / 10
    rows = torch.from_numpy(np.stack([flatten(layout, {"frame": frame[i], "pos": pos[i]}) for i in range(2)]))
    side = int(np.sqrt(SUMMARY_ELEMENTS // 3))  # 9x9 cells per channel
    assert summary_size(layout) == side * side * 3 + 5
    out = agent_summary(layout, rows)
    assert out.shape == (2, summary_size(layout)) and out.dtype == torch.float32
    cells = out[:, : side * side * 3].reshape(2, 3, side, side)
    # uint8 0..255 -> [-1, 1] (the vector encoders' scaling of an integer Box), then averaged over each cell
    assert torch.all(cells[0, 0, :4] == 1.0) and torch.all(cells[0, 0, 5:] == -1.0)
    assert torch.all(cells[0, 1:] == -1.0)
    assert torch.all(cells[1, 2, :, 5:] == 1.0) and torch.all(cells[1, 2, :, :4] == -1.0)
    assert torch.allclose(out[:, side * side * 3 :], torch.from_numpy(pos))  # a float Box: as it is


def test_critic_buffer_bytes_is_what_the_buffer_allocates() -> None:
    cfg = TrainConfig(env="pettingzoo.sisl.multiwalker_v9", env_kwargs={"max_cycles": 30}, num_envs=2, horizon=8,
                      minibatch_size=24, **SMALL)
    trainer = MAPPOTrainer(cfg)
    try:
        buffer = trainer.buffer
        allocated = buffer.critic_obs.nbytes + buffer.staged.nbytes
        assert allocated == critic_buffer_bytes(trainer.num_rows, 8, trainer.batch_size, trainer.critic_size)
    finally:
        trainer.close()


def test_multiwalker_trains_through_walkers_falling(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Random walkers fall within ~60 steps; multiwalker's state() then fails (its bodies are destroyed).
    cfg = TrainConfig(env="pettingzoo.sisl.multiwalker_v9", env_kwargs={"max_cycles": 300}, num_envs=2,
                      horizon=50, minibatch_size=150, **SMALL)
    trainer = MAPPOTrainer(cfg)
    assert trainer.critic_mode == "state"  # "auto": its 75-number state()
    monkeypatch.setattr("shoal.train.core.centralized._STATE_WARNED", set())
    with caplog.at_level(logging.WARNING, "shoal.train.core.centralized"):
        stats = _train(trainer, 4)
    warned = [r for r in caplog.records if "state() failed once its agents were gone" in r.getMessage()]
    assert len(warned) == 1  # once, not once per env copy
    assert trainer.episodes >= 2
    assert all(np.isfinite(s["value_loss"]) and np.isfinite(s["policy_loss"]) for s in stats)


@pytest.mark.parametrize(
    ("env", "kwargs", "slots", "obs_shape", "horizon", "minibatch"),
    [
        ("pettingzoo.butterfly.pistonball_v6", {"max_cycles": 6}, 20, (457, 120, 3), 4, 40),
        ("pettingzoo.butterfly.cooperative_pong_v6", {"max_cycles": 10}, 2, (280, 480, 3), 4, 8),
    ],
)
def test_image_envs_train_with_a_bounded_critic_input(
    env: str, kwargs: dict, slots: int, obs_shape: tuple, horizon: int, minibatch: int
) -> None:
    # MAPPO's defaults (minibatch_size left unset): 1200 rows shrink so their float32 frames fit the bound
    default = make_trainer(TrainConfig(env=env, env_kwargs=kwargs, num_envs=1, horizon=1300 // slots, **SMALL))
    default.close()
    assert default.config.minibatch_size == MINIBATCH_OBS_BYTES // (4 * int(np.prod(obs_shape))) < 1200

    cfg = TrainConfig(env=env, env_kwargs=kwargs, num_envs=1, horizon=horizon, minibatch_size=minibatch, **SMALL)
    trainer = MAPPOTrainer(cfg)
    layout = trainer.vecenv.obs_layout
    assert trainer.critic_mode == "concat"  # their state() is a rendered screen: too large
    assert summary_size(layout) <= SUMMARY_ELEMENTS
    assert trainer.critic_size == critic_input_size(layout, slots, 1) <= slots * (SUMMARY_ELEMENTS + 2) + 300
    assert trainer.buffer.critic_obs.nbytes < 8 * 2**20
    stats = _train(trainer, 2)
    assert trainer.global_step >= 2 * horizon * slots
    assert all(np.isfinite(s["value_loss"]) for s in stats)


def test_a_critic_buffer_above_the_limit_is_refused_naming_the_flag() -> None:
    cfg = TrainConfig(env="pettingzoo.butterfly.pistonball_v6", env_kwargs={"max_cycles": 6}, num_envs=1,
                      horizon=4, minibatch_size=40, critic_input="concat", critic_memory_limit=1e-4, **SMALL)
    with pytest.raises(APIUsageError, match=r"critic_memory_limit=0\.0001 GiB.*--critic-memory-limit") as info:
        MAPPOTrainer(cfg)
    assert "5,144 floats per row" in str(info.value)
