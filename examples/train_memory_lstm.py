"""A recurrent policy on the built-in memory task: the cue of step 0 must be recalled at the last step.

    python examples/train_memory_lstm.py

A feed-forward policy cannot beat a mean return of 0.5 here; an LSTM trained with BPTT over segments
reaches 1.
"""

from __future__ import annotations

import shoal
from shoal.train import TrainConfig

config = TrainConfig(
    env="memory",
    env_kwargs={"length": 4, "num_cues": 2},
    recurrent=True,
    total_steps=20_000,
    num_envs=8,
    horizon=16,
    minibatch_size=128,
    update_epochs=4,
    learning_rate=3e-3,
    eval_episodes=100,
)
result = shoal.train(config)
print(f"mean evaluation return: {result.evaluation['mean_return']:.2f} (memoryless best: 0.5)")
