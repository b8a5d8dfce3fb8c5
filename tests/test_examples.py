"""examples/ppo_single_file.py learns CartPole like the Trainer does with the same settings and seed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from shoal.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ppo_single_file.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ppo_single_file", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_single_file_ppo_learns_like_the_trainer() -> None:
    example = _load_example()
    args = example.Args(total_timesteps=30_000, seed=1)
    _, returns = example.train(args)
    theirs = float(np.mean(returns[-20:]))
    result = train(TrainConfig(env="CartPole-v1", total_steps=30_000, seed=1, num_envs=args.num_envs,
                               horizon=args.num_steps, learning_rate=args.learning_rate,
                               update_epochs=args.update_epochs, minibatch_size=args.num_envs * args.num_steps // 4,
                               hidden_size=args.hidden_size, log_interval=60, tensorboard=False))
    ours = float(result.episode_return)
    # a random CartPole policy scores about 22; both learn to several times that in 30k steps
    assert theirs > 90 and ours > 90, (theirs, ours)
    assert 0.4 < theirs / ours < 2.5, (theirs, ours)


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_the_readmes_first_python_block_runs_verbatim(tmp_path: Path) -> None:
    """In a fresh interpreter, as a reader would paste it: every name it uses must be reachable after `import shoal`."""
    block = _python_blocks((ROOT / "README.md").read_text())[0]
    assert "import shoal" in block and "shoal.vector.make(" in block
    script = tmp_path / "first_block.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_every_layer_is_an_attribute_after_import_shoal() -> None:
    code = ("import sys, shoal; assert 'torch' not in sys.modules; "
            "shoal.vector.make, shoal.emulation.unflatten; "
            "shoal.policies.Policy, shoal.train.TrainConfig; assert callable(shoal.train)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
