"""Watching a policy: evaluation episodes recorded into an mp4 or a gif (read back frame by frame), or shown in a
window; clear errors without the video extra, for an env that cannot render, and without a display."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest

import shoal
from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.train import evaluate
from shoal.train.runs.resolve import resolve_env

PISTONBALL = "pettingzoo.butterfly.pistonball_v6"
PISTON_KWARGS = {"n_pistons": 4, "continuous": False, "max_cycles": 20}


def _policy(env_fn: Callable[[], Any]) -> Policy:
    with shoal.vector.make(env_fn, 1) as vec:
        return Policy.from_env(vec)


def _frames(path: Path, fps: float = 30.0) -> tuple[int, np.ndarray]:
    """How many frames ``path`` holds at ``fps``, and its first frame. A gif merges a frame identical to the one
    before it into that one's duration, so its frames are counted by time."""
    if path.suffix == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            milliseconds = sum(frame.info["duration"] for frame in ImageSequence.Iterator(image))
        return round(milliseconds * fps / 1000), imageio.mimread(path, memtest=False)[0]
    with imageio.get_reader(path) as reader:
        return reader.count_frames(), reader.get_data(0)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_gymnasium_env_is_recorded_frame_by_frame(tmp_path: Path, suffix: str) -> None:
    env_fn = resolve_env("CartPole-v1")
    result = evaluate(_policy(env_fn), env_fn, 2, video=tmp_path / f"cartpole{suffix}", fps=25)
    path = Path(result["video"])
    assert path == tmp_path / f"cartpole{suffix}"
    count, first = _frames(path, fps=25)
    # one frame after the reset and one after every step of the two episodes, each end followed by the frame of
    # the reset that starts the next episode
    assert count == result["frames"] == 1 + round(result["mean_length"] * result["episodes"]) + result["episodes"]
    assert first.shape == (400, 600, 3) and first.std() > 0
    assert result["episodes"] == 2 and len(result["returns"]) == 2


def test_a_pettingzoo_env_is_recorded_with_its_env_level_frame(tmp_path: Path) -> None:
    env_fn = resolve_env(PISTONBALL, PISTON_KWARGS, wrappers="color_reduction_v0(mode='B'),resize_v1(32,32)")
    result = evaluate(_policy(env_fn), env_fn, 1, video=tmp_path / "pistonball.mp4")  # one game of 4 agents
    count, first = _frames(Path(result["video"]))
    screen = resolve_env(PISTONBALL, {**PISTON_KWARGS, "render_mode": "rgb_array"})()
    screen.reset(seed=0)
    # the whole env's picture in colour, not an agent's grey 32x32 observation
    assert first.shape == screen.render().shape == (560, 240, 3)
    assert result["episodes"] == 1 and result["agent_episodes"] == 4
    assert count == result["frames"] == 1 + round(result["mean_length"]) + 1


def test_video_without_the_extra_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    env_fn = resolve_env("CartPole-v1")
    with pytest.raises(APIUsageError, match=r'recording a video needs imageio: pip install "shoal\[video\]"'):
        evaluate(_policy(env_fn), env_fn, 1, video=tmp_path / "x.mp4")


def test_without_ffmpeg_an_mp4_becomes_a_gif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    env_fn = resolve_env("CartPole-v1")
    with caplog.at_level(logging.WARNING):
        result = evaluate(_policy(env_fn), env_fn, 1, video=tmp_path / "x.mp4", fps=25)
    assert result["video"] == str(tmp_path / "x.gif") and "writing a gif instead" in caplog.text
    assert _frames(tmp_path / "x.gif", fps=25)[0] == result["frames"]


def test_an_env_that_cannot_render_is_named(tmp_path: Path) -> None:
    env_fn = resolve_env("memory")
    with pytest.raises(APIUsageError, match="env 'memory' cannot render: its constructor takes no render_mode"):
        evaluate(_policy(env_fn), env_fn, 1, video=tmp_path / "m.mp4")
    assert not (tmp_path / "m.mp4").exists()
    plain = resolve_env("CartPole-v1")

    def cartpole() -> gym.Env:
        return plain()

    with pytest.raises(APIUsageError, match=r"env 'cartpole' has render_mode=None, not 'rgb_array'"):
        evaluate(_policy(plain), cartpole, 1, video=tmp_path / "c.mp4")


def test_render_without_a_display_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    env_fn = resolve_env("CartPole-v1")
    with pytest.raises(APIUsageError, match=r"needs a display.*--video"):
        evaluate(_policy(env_fn), env_fn, 1, render=True)


def test_render_shows_the_episodes_in_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # pygame's window without a screen
    env_fn = resolve_env("CartPole-v1", {"max_episode_steps": 5})
    result = evaluate(_policy(env_fn), env_fn, 1, render=True)
    assert result["episodes"] == 1 and result["mean_length"] == 5 and "video" not in result


class _Counter(gym.Env):
    """Three steps per episode; its frame shows how many steps the episode has taken (in every pixel)."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0.0, 3.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode, self.t = render_mode, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: object) -> tuple:
        self.t += 1
        return np.full(1, self.t, np.float32), 1.0, self.t == 3, False, {}

    def render(self) -> np.ndarray:
        return np.full((16, 16, 3), 60 * self.t, np.uint8)


def test_every_episodes_last_frame_is_recorded_before_the_next_reset(tmp_path: Path) -> None:
    result = evaluate(_policy(lambda: _Counter("rgb_array")), lambda: _Counter("rgb_array"), 2,
                      video=tmp_path / "counter.gif", fps=10)
    frames = imageio.mimread(result["video"], memtest=False)
    assert [round(float(f[..., :3].mean()) / 60) for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_a_turn_based_game_gives_one_frame_per_move_and_none_for_finished_players(tmp_path: Path) -> None:
    from pettingzoo.classic import tictactoe_v3

    def env_fn() -> Any:
        return tictactoe_v3.env(render_mode="rgb_array")

    result = evaluate(_policy(env_fn), env_fn, 1, video=tmp_path / "ttt.gif")
    frames = imageio.mimread(result["video"], memtest=False)
    # the reset, every move (each changes the board), then the next game's reset: never the same frame twice
    assert len(frames) == result["frames"] >= 1 + 5 + 1
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))
