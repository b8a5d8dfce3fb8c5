"""Observation encoders respect what a leaf's bounds and values mean: integer codes are embedded (not squashed by
a 0..255 rescale), small-range images are scaled by their high, other integer Boxes by their actual bounds; and a
grid world of codes 0..10 in a 7x7x3 ``uint8`` Box is learned by PPO with a deterministic policy that reaches its
goal (rescaled as numbers, the greedy policy walked into a wall)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from shoal.emulation.layout import Leaf, compile_layout
from shoal.policies.encoders import (
    EmbeddingEncoder,
    ImageEncoder,
    encoder_kind,
    make_leaf_encoder,
    scale_leaf,
)
from shoal.train import train

EMPTY, WALL, GOAL, AGENT = 1, 2, 8, 10  # MiniGrid's object ids
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _leaf(space: spaces.Space) -> Leaf:
    return compile_layout(space).leaves[0]


def test_a_small_uint8_grid_of_codes_gets_one_vector_per_code_of_each_cell() -> None:
    leaf = _leaf(spaces.Box(0, 255, (7, 7, 3), np.uint8))  # declared 0..255, holds codes 0..10
    assert encoder_kind(leaf) == "embedding"
    encoder = make_leaf_encoder(leaf, embedding_dim=4)
    assert isinstance(encoder, EmbeddingEncoder)
    grid = torch.zeros(2, 7, 7, 3, dtype=torch.uint8)
    grid[0, 3, 4, 0] = 1
    grid[1, 3, 4, 0] = 2  # codes 1 and 2: as different as any two codes, not 1/255 apart
    out = encoder(grid).reshape(2, 147, 4)
    cell = (3 * 7 + 4) * 3
    table = encoder.embedding.weight
    assert torch.equal(out[0, cell], table[cell * 256 + 1]) and torch.equal(out[1, cell], table[cell * 256 + 2])
    assert torch.equal(out[0, :cell], out[1, :cell]) and torch.equal(out[0, cell + 1 :], out[1, cell + 1 :])


def test_an_integer_box_of_few_values_is_embedded_from_its_low() -> None:
    leaf = _leaf(spaces.Box(3, 13, (5,), np.int64))  # 11 codes
    encoder = make_leaf_encoder(leaf, embedding_dim=2)
    assert encoder_kind(leaf) == "embedding" and encoder.embedding.num_embeddings == 5 * 11
    x = torch.tensor([[3, 13, 8, 3, 4]])
    rows = torch.tensor([0, 10, 5, 0, 1]) + torch.arange(5) * 11
    assert torch.equal(encoder(x), encoder.embedding.weight[rows].reshape(1, 10))


def test_other_integer_boxes_are_scaled_by_their_actual_bounds() -> None:
    leaf = _leaf(spaces.Box(0, 1000, (3,), np.int32))  # a counter: too many values to embed
    assert encoder_kind(leaf) == "vector"
    assert torch.equal(scale_leaf(leaf, torch.tensor([[0, 500, 1000]], dtype=torch.int32)),
                       torch.tensor([[-1.0, 0.0, 1.0]]))
    grid = _leaf(spaces.Box(0, 15, (21, 79), np.uint8))  # NetHack's colours: one linear layer, per cell cost
    assert encoder_kind(grid) == "vector"
    assert torch.equal(scale_leaf(grid, torch.full((1, 21, 79), 15, dtype=torch.uint8)), torch.ones(1, 21 * 79))


def test_a_small_range_image_is_scaled_by_its_high_not_by_255() -> None:
    leaf = _leaf(spaces.Box(0, 10, (8, 8, 2), np.uint8))
    encoder = make_leaf_encoder(leaf, hidden_size=8)
    assert isinstance(encoder, ImageEncoder) and encoder.input_scale == 0.1
    x = torch.randint(0, 11, (3, 8, 8, 2), dtype=torch.uint8)
    first = encoder.convs[0]
    h = F.relu(first(x.permute(0, 3, 1, 2).float() / 10))  # the first conv sees values in [0, 1]
    for conv in encoder.convs[1:]:
        h = F.relu(conv(h))
    torch.testing.assert_close(encoder(x), F.relu(encoder.linear(h.reshape(3, -1))))
    assert make_leaf_encoder(_leaf(spaces.Box(0, 255, (8, 8, 2), np.uint8))).input_scale == 1 / 255


class CodeGrid(gym.Env):
    """A 7x7 room (walls around a 5x5 floor) seen whole as MiniGrid codes ``(object, colour, state)`` in a
    ``uint8`` Box declared 0..255. The agent starts on a random floor cell and must reach the goal in the
    bottom-right corner within 20 moves (reward ``1 - 0.9 * t / 20``); moving into a wall does nothing."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 255, (7, 7, 3), np.uint8)
        self.action_space = spaces.Discrete(4)
        self.goal = (5, 5)

    def _obs(self) -> np.ndarray:
        grid = np.zeros((7, 7, 3), np.uint8)
        grid[:, :, 0], grid[:, :, 1] = WALL, 5
        grid[1:6, 1:6, 0], grid[1:6, 1:6, 1] = EMPTY, 0
        grid[self.goal] = (GOAL, 1, 0)
        grid[self.pos] = (AGENT, 0, 0)
        return grid

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        cell = int(self.np_random.integers(24))  # any floor cell but the goal's
        self.pos, self.t = (1 + cell // 5, 1 + cell % 5), 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        row, col = self.pos[0] + MOVES[int(action)][0], self.pos[1] + MOVES[int(action)][1]
        if 1 <= row <= 5 and 1 <= col <= 5:
            self.pos = (row, col)
        if self.pos == self.goal:
            return self._obs(), 1.0 - 0.9 * self.t / 20, True, False, {}
        return self._obs(), 0.0, False, self.t >= 20, {}


def _random_return(episodes: int) -> float:
    env, rng, total = CodeGrid(), np.random.default_rng(0), 0.0
    for i in range(episodes):
        env.reset(seed=i)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
            total += reward
            done = terminated or truncated
    return total / episodes


def test_ppo_learns_a_grid_world_of_codes_with_a_deterministic_policy() -> None:
    result = train(env_fn=CodeGrid, total_steps=20_000, eval_episodes=100, tensorboard=False, seed=1)
    random_return = _random_return(300)  # about 0.15: a random walk rarely reaches the corner in time
    greedy = result.evaluation["mean_return"]  # most likely actions; optimal is about 0.82
    assert greedy > random_return + 0.5 and greedy > 0.7, (greedy, random_return)
