"""TrainConfig: every knob of a training run, typed, with a docstring per field.

Fields whose best value depends on the algorithm default to None and are filled from :data:`ALGO_DEFAULTS` by
:meth:`TrainConfig.resolved`, which every trainer calls: the API and the command line train with the same
numbers, and the run directory's ``config.json`` records them. ``batch_size`` is derived there too, once the
number of agent slots per env is known.

The PPO defaults, with CartPole-v1's preset (:data:`ENV_PRESETS`), train CartPole-v1 to a deterministic evaluation
return of 500 within 100k steps (17-26 s a run in ``benchmarks/learning.py`` on a busy 2-core CPU). Other envs
usually want a longer ``total_steps`` and often a smaller ``learning_rate`` (e.g. 2.5e-4 to 1e-3).

Off by default and opt-in: reward scaling/clipping/normalization (``reward_scale``, ``reward_clip``,
``reward_norm``), prioritized segment sampling (``prio_alpha > 0``), V-trace-clipped advantages
(``advantage="vtrace"``), dual clipping (``dual_clip``), early stopping on KL (``target_kl``), Weights & Biases
(``wandb``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shoal.errors import APIUsageError
from shoal.wrappers import parse_wrappers

__all__ = [
    "ALGO_DEFAULTS",
    "ALGOS",
    "ENV_PRESETS",
    "BASELINES",
    "DEFAULT_MIX",
    "LEAGUE_POOL_SIZE",
    "LEAGUE_PRESETS",
    "LEAGUE_PRESETS_BEFORE_STORED_MIX",
    "OFFLINE_ALGOS",
    "SEARCH_BASELINES",
    "STRATEGIES",
    "Algo",
    "TrainConfig",
    "field_docs",
    "is_baseline",
    "parse_mix",
    "plain_text",
]

Algo = Literal["ppo", "mappo", "sac", "bc", "iql", "dt"]
Backend = Literal["serial", "multiprocessing", "ray"]
Advantage = Literal["gae", "vtrace"]
CriticInput = Literal["auto", "state", "concat"]
ValueNorm = Literal["auto", "none", "running", "popart"]
WandbMode = Literal["offline", "online", "disabled"]
Preset = Literal["auto", "none"]
Activation = Literal["relu", "tanh"]

#: The algorithms :func:`shoal.train.train` runs.
ALGOS: tuple[str, ...] = typing.get_args(Algo)

#: Per algorithm, the values of the fields left at None. PPO's entropy bonus keeps sparse-reward envs (Acrobot)
#: from collapsing to a deterministic policy before their first success. MAPPO's follow the MAPPO study (Yu et
#: al., 2022): parameter sharing with agent ids, large minibatches (two per update), up to 10 epochs, an entropy
#: bonus; tuned on mpe2.simple_spread_v3 (``benchmarks/mappo.py``).
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"num_envs": 8, "horizon": 64, "learning_rate": 4e-3, "update_epochs": 3, "minibatch_size": 128,
            "ent_coef": 0.01, "hidden_size": 64, "agent_ids": False, "anneal_lr": True, "gamma": 0.99,
            "gae_lambda": 0.95, "critic_input": "auto", "reward_norm": False, "activation": "relu",
            "obs_norm": False, "critic_residual": False},
    "mappo": {"num_envs": 16, "horizon": 50, "learning_rate": 2.5e-3, "update_epochs": 10, "minibatch_size": 1200,
              "ent_coef": 0.01, "hidden_size": 128, "agent_ids": True, "anneal_lr": True, "gamma": 0.99,
              "gae_lambda": 0.95, "critic_input": "auto", "reward_norm": False, "activation": "relu",
              "obs_norm": False, "critic_residual": True},
    # SAC: an update is `horizon` vector steps, each followed by its gradient steps; minibatch_size is the
    # sampled batch; a constant learning rate (as SB3 and CleanRL use); ent_coef and update_epochs are unused;
    # critic_input None: each critic reads the slot's own observation (decentralized) unless one is asked for.
    "sac": {"num_envs": 4, "horizon": 50, "learning_rate": 1e-3, "update_epochs": 1, "minibatch_size": 256,
            "ent_coef": 0.0, "hidden_size": 256, "agent_ids": False, "anneal_lr": False, "gamma": 0.99,
            "gae_lambda": 0.95, "critic_input": None, "reward_norm": False, "activation": "relu",
            "obs_norm": False, "critic_residual": False},
    # Offline (BC, IQL; shoal.train.offline): total_steps counts gradient steps, as CORL does; an update is
    # `horizon` gradient steps (the unit of logging, checkpoint_interval and eval_interval) on sampled minibatches
    # of minibatch_size transitions; num_envs envs play the online evaluations; a constant learning rate (CORL's
    # 3e-4 for IQL); ent_coef and update_epochs are unused.
    "bc": {"num_envs": 8, "horizon": 500, "learning_rate": 1e-3, "update_epochs": 1, "minibatch_size": 256,
           "ent_coef": 0.0, "hidden_size": 256, "agent_ids": False, "anneal_lr": False, "gamma": 0.99,
           "gae_lambda": 0.95, "critic_input": None, "reward_norm": False, "activation": "relu",
           "obs_norm": False, "critic_residual": False},
    "iql": {"num_envs": 8, "horizon": 500, "learning_rate": 3e-4, "update_epochs": 1, "minibatch_size": 256,
            "ent_coef": 0.0, "hidden_size": 256, "agent_ids": False, "anneal_lr": False, "gamma": 0.99,
            "gae_lambda": 0.95, "critic_input": None, "reward_norm": False, "activation": "relu",
            "obs_norm": False, "critic_residual": False},
    # The Decision Transformer: minibatch_size counts windows of context_length steps; hidden_size is the width
    # of its tokens. A transformer step costs far more than an MLP's (0.1 to 0.3 s on one CPU core with these),
    # so an update is 100 of them; gamma and gae_lambda are unused (returns-to-go are undiscounted).
    "dt": {"num_envs": 8, "horizon": 100, "learning_rate": 1e-3, "update_epochs": 1, "minibatch_size": 64,
           "ent_coef": 0.0, "hidden_size": 64, "agent_ids": False, "anneal_lr": False, "gamma": 0.99,
           "gae_lambda": 0.95, "critic_input": None, "reward_norm": False, "activation": "relu",
           "obs_norm": False, "critic_residual": False},
}

#: Per algorithm and env id, settings for the fields a config leaves unset, applied before :data:`ALGO_DEFAULTS`
#: when ``preset="auto"`` (the default): envs whose good settings differ from the general defaults, as
#: rl-baselines3-zoo tunes its hyperparameters per env. Each entry is measured by ``benchmarks/learning.py``
#: against SB3 with the zoo's own settings. Pendulum-v1 wants a short horizon of discounting (gamma 0.9: its reward
#: is immediate), long rollouts and many epochs; Acrobot-v1's -1 per step and LunarLander-v3's crash and landing
#: bonuses (about +-100) need normalized value targets. MountainCar-v0 takes the zoo's settings (16 envs of 16
#: steps, 4 epochs of minibatches of 64 at a constant 3e-4, gae_lambda 0.98, no entropy bonus, observations and
#: rewards normalized as VecNormalize does) and SB3's tanh network: its velocity spans +-0.07; with ReLU, or with
#: tanh over the raw observations, PPO never reached the goal in 100k steps, and over observations scaled to
#: [-1, 1] by their bounds it trailed SB3 (final -141 against -126 at 100k steps, seeds 1-3).
ENV_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ppo": {
        # CartPole-v1 (shoal.train.train, 100k steps, 20 deterministic evaluation episodes): the general defaults
        # evaluate to 500 on 9 of seeds 1-10 (seed 5: 305); without the entropy bonus and with a fourth epoch (the
        # zoo's CartPole settings drop the bonus too), 500 on all of seeds 0-20, at a third more gradient steps
        "CartPole-v1": {"ent_coef": 0.0, "update_epochs": 4},
        "Pendulum-v1": {"num_envs": 4, "horizon": 1024, "learning_rate": 1e-3, "gamma": 0.9, "update_epochs": 10,
                        "minibatch_size": 64, "ent_coef": 0.0, "value_norm": "running"},
        "Acrobot-v1": {"value_norm": "running"},
        "LunarLander-v3": {"value_norm": "running"},
        "MountainCar-v0": {"num_envs": 16, "horizon": 16, "gae_lambda": 0.98, "ent_coef": 0.0, "update_epochs": 4,
                           "minibatch_size": 64, "learning_rate": 3e-4, "anneal_lr": False, "reward_norm": True,
                           "activation": "tanh", "obs_norm": True},
        # connect four (the board CNN; benchmarks/league.py, 600k league steps, seed 0, 200 games each): with the
        # earlier league mix, lr 1e-3 with 128-unit layers, 16 envs, 4 epochs of minibatches of 256 and half the
        # entropy bonus won 97.5% / 53% / 36.5% against random / the heuristic / alphabeta@2, the general defaults
        # 93.5% / 41% / 23%; with the mix after it (self .3, uniform .1, random .1, heuristic .4, alphabeta@2 .1)
        # 96% / 79.5% / 83.5%
        "pettingzoo.classic.connect_four_v3": {"num_envs": 16, "learning_rate": 1e-3, "hidden_size": 128,
                                               "update_epochs": 4, "minibatch_size": 256, "ent_coef": 0.005},
    },
    # MAPPO on simple_spread (episodes of 25 steps): gamma 0.95, with which benchmarks/mappo.py's MAPPO passed the
    # scripted heuristic (-11.14 against -11.73 at 4M steps, one-MLP critic, 50-step rollouts); with 0.99 it learned
    # to spread much later. Rollouts of 100 steps (4,800 transitions, four minibatches: the same gradient steps per
    # transition): at 2M steps, seeds 1-3 (benchmarks/learning.py), final -13.21 and eval -12.86 against -13.56 /
    # -13.30 with 50 steps; with 25 steps, seeds 1-2, -14.77 / -14.60
    "mappo": {
        "mpe2.simple_spread_v3": {"gamma": 0.95, "horizon": 100},
    },
    # SAC on Pendulum-v1 (3 observations, 1 torque): 64-unit layers learn it as well as 256-unit ones within 20k
    # steps (benchmarks/sac.py, 5 seeds) at a quarter of the compute per gradient step, which on a CPU is most of
    # SAC's time; the zoo's learning rate (1e-3) is already SAC's default
    "sac": {
        "Pendulum-v1": {"hidden_size": 64},
    },
}

#: The ``(algo, env)`` entries of :data:`ENV_PRESETS` added with or after ``activation`` and ``reward_norm``: a
#: config saved before those fields (:meth:`TrainConfig.from_dict`) that leaves one of these entries' fields unset
#: loads without its preset, as it trained; every other entry is the one such a config was trained with.
_PRESETS_SINCE_ACTIVATION: frozenset[tuple[str, str]] = frozenset({("ppo", "MountainCar-v0"),
                                                                  ("ppo", "pettingzoo.classic.connect_four_v3"),
                                                                  ("ppo", "CartPole-v1"),
                                                                  ("mappo", "mpe2.simple_spread_v3")})

#: What the ``(algo, env)`` entries of :data:`ENV_PRESETS` changed to ``obs_norm`` held before: a config saved
#: before the field (:meth:`TrainConfig.from_dict`) resumes with the settings it trained with.
_PRESETS_BEFORE_OBS_NORM: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "MountainCar-v0"): {"wrappers": "normalize_obs_v0(env_min=-1.0, env_max=1.0)"},
}

#: The algorithms that learn from a recorded dataset (``TrainConfig.dataset``) instead of collecting experience.
OFFLINE_ALGOS: tuple[str, ...] = ("bc", "iql", "dt")


#: ``league_pool_size`` when unset: 500 snapshots of the connect-four policy hold about 380 MB.
LEAGUE_POOL_SIZE = 500

#: Opponent strategies and scripted baselines of ``league_opponents`` (see :mod:`shoal.train.selfplay.opponents`).
STRATEGIES: tuple[str, ...] = ("self", "latest", "uniform", "pfsp")
BASELINES: tuple[str, ...] = ("random", "heuristic", "solver", "alphabeta")
#: baselines that search the game tree; ``alphabeta`` takes a depth as ``alphabeta@<plies>``
SEARCH_BASELINES: tuple[str, ...] = ("solver", "alphabeta")


def is_baseline(name: str) -> bool:
    """``name`` is a scripted baseline: one of :data:`BASELINES`, or ``alphabeta@<plies>`` (plies >= 1).

    Raises:
        APIUsageError: a depth on a player that takes none, or a depth that is not a positive integer.
    """
    base, at, depth = name.partition("@")
    if base not in BASELINES:
        return False
    if at and base != "alphabeta":
        raise APIUsageError(f"{name!r}: only 'alphabeta' takes a search depth ('alphabeta@4'); {base!r} takes none")
    if at and not (depth.isdigit() and int(depth) >= 1):
        raise APIUsageError(f"{name!r}: the search depth after '@' must be a positive integer, e.g. 'alphabeta@4'")
    return True

Mix = tuple[tuple[str, float], ...]

#: ``league_opponents="auto"``: the mix for a game (env name without version), else :data:`DEFAULT_MIX`. The
#: classic games add their search players as anchors: games against them show the learner strong play that
#: self-play alone reaches late, and put a known strength on the rating scale. The heuristic's random moves show
#: it positions that perfect play never reaches: with the solver alone the tic-tac-toe league drew every game
#: against the heuristic, with 15% of heuristic games it wins a quarter of them and still never loses to the
#: solver (``benchmarks/league.py tictactoe``). Connect four, with its PPO preset (:data:`ENV_PRESETS`), 600k steps,
#: seed 0, wins against the heuristic: 53% with ``self:0.6,uniform:0.2,heuristic:0.1,alphabeta@2:0.1``, 72.5% with
#: ``self:0.4,uniform:0.1,heuristic:0.25,alphabeta@2:0.25``, 79.5% with ``self:0.3,uniform:0.1,random:0.1,
#: heuristic:0.4,alphabeta@2:0.1`` (52.5% and 67.5% for the last two at the default entropy bonus). After 30 minutes
#: (``benchmarks/league.py connect_four``, seed 1, the board CNN shared with the critic) that last mix won 98.5% /
#: 87% / 96% against random / the heuristic / alphabeta@2, the present one, with more of the scripted players and
#: less self-play, 99% / 91% / 100% (seeds 0-3: 98-99% / 89.5-95.5% / 87-100%).
#: alphabeta@2 breaks only exact ties at random, so one winning line wins most games against it; the heuristic's
#: random moves make it the steadier measure.
LEAGUE_PRESETS: dict[str, str] = {
    "tictactoe": "self:0.5,uniform:0.1,solver:0.25,heuristic:0.15",
    "connect_four": "self:0.2,uniform:0.1,random:0.1,heuristic:0.45,alphabeta@2:0.15",
}
DEFAULT_MIX = "self:0.8,uniform:0.2"
#: Every mix ``league_opponents="auto"`` resolved to before league checkpoints stored their mix (frozen: never
#: add to it), per game, ``"*"`` for games without a preset. Such a checkpoint resumes with the one whose anchors its
#: table holds (each game's entries have distinct anchor sets).
LEAGUE_PRESETS_BEFORE_STORED_MIX: dict[str, tuple[str, ...]] = {
    "tictactoe": ("self:0.7,uniform:0.1,solver:0.2", "self:0.5,uniform:0.1,solver:0.25,heuristic:0.15"),
    "connect_four": ("self:0.6,uniform:0.2,heuristic:0.1,alphabeta@2:0.1",
                     "self:0.3,uniform:0.1,random:0.1,heuristic:0.4,alphabeta@2:0.1"),
    "*": ("self:0.8,uniform:0.2",),
}


def parse_mix(spec: str, game: str = "") -> Mix:
    """Parse an opponent mix such as ``"latest:0.8,uniform:0.2"`` into ``(name, weight)`` pairs summing to 1;
    ``"auto"`` is the preset of ``game`` (:data:`LEAGUE_PRESETS`, else :data:`DEFAULT_MIX`).

    Raises:
        APIUsageError: unknown names, repeated names, or weights that are not positive numbers.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise APIUsageError(f"league_opponents must be 'auto' or a non-empty mix like 'self:0.8,uniform:0.2', "
                            f"got {spec!r}")
    if spec.strip() == "auto":
        spec = LEAGUE_PRESETS.get(game, DEFAULT_MIX)
    entries: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight_text = part.strip().partition(":")
        name = name.strip()
        if name not in STRATEGIES and not is_baseline(name):
            raise APIUsageError(f"league_opponents: unknown opponent {name!r} in {spec!r}; valid names: "
                                f"{list(STRATEGIES + BASELINES)} or 'alphabeta@<depth>' (e.g. "
                                "'self:0.8,uniform:0.2')")
        if name in entries:
            raise APIUsageError(f"league_opponents: {name!r} appears twice in {spec!r}")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise APIUsageError(f"league_opponents: weight {weight_text!r} of {name!r} is not a number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise APIUsageError(f"league_opponents: weight of {name!r} must be > 0, got {weight_text!r}")
        entries[name] = weight
    total = sum(entries.values())
    return tuple((name, weight / total) for name, weight in entries.items())


@dataclass
class TrainConfig:
    """Configuration of :func:`shoal.train.train`. Validate with :meth:`validate` (``train`` does)."""

    # ---- run -----------------------------------------------------------------------------------------------
    env: str = "CartPole-v1"
    """Env to train on: a Gymnasium id, a PettingZoo module path
    (``pettingzoo.butterfly.knights_archers_zombies_v11``) or a built-in env name (``shoal list``). Ignored
    when ``train`` is given an ``env_fn``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env constructor."""
    wrappers: str | None = None
    """SuperSuit wrappers applied to the env before shoal emulates it, in order, e.g.
    ``"color_reduction_v0(mode='B'),resize_v1(84,84),frame_stack_v1(4)"`` (literal arguments only; see
    :mod:`shoal.wrappers`). Recorded in the run, so evaluation rebuilds the same env. Applied to an ``env_fn``
    given to ``train`` too."""
    algo: Algo = "ppo"
    """Algorithm: ``"ppo"`` (on PettingZoo envs IPPO: parameter-shared, every live slot a row), ``"mappo"``
    (PPO with a centralized critic and value normalization), ``"sac"`` (soft actor-critic), or an offline one
    learning from ``dataset``: ``"bc"`` (behaviour cloning), ``"iql"`` (implicit Q-learning) or ``"dt"`` (the
    Decision Transformer, conditioned on ``target_return``). The fields left at None take this algorithm's
    defaults (:data:`ALGO_DEFAULTS`)."""
    preset: Preset = "auto"
    """Per-env settings for the fields left unset: ``"auto"`` takes the env's entry in :data:`ENV_PRESETS` for
    this algorithm when there is one (printed at the start of a run; any flag overrides its field), ``"none"``
    only the algorithm's defaults."""
    total_steps: int = 150_000
    """Budget of agent steps: actions of live agents collected (env steps times live agents). Offline algorithms
    (``bc``, ``iql``, ``dt``) collect nothing: for them it counts gradient steps (one minibatch each), as CORL
    does."""
    dataset: str | None = None
    """Offline algorithms (``bc``, ``iql``, ``dt``): the recorded dataset to learn from (a path read by
    ``shoal.datasets.load_dataset``); from Python an ``OfflineDataset`` may be given to ``train(config,
    dataset=...)`` instead. It must match the env's observation and action layouts."""
    seed: int = 0
    """Seed of the envs, the policy initialization, action sampling and minibatch shuffling."""
    device: str = "cpu"
    """Torch device of the learner and the policy (``"cpu"``, ``"cuda:1"``, ``"mps"``, ``"auto"``...)."""
    torch_threads: int = 1
    """Torch intra-op threads in this process (0: torch's default). Small networks are fastest with 1."""
    run_dir: str | None = None
    """Directory for the config, checkpoints, TensorBoard events and the scalars CSV; None writes nothing."""
    resume: bool = False
    """Continue the run in ``run_dir`` from its newest checkpoint (exactly, on the serial backend)."""
    overwrite: bool = False
    """Start afresh in a ``run_dir`` holding another run (its checkpoints, CSV and events are deleted)."""

    # ---- vector env ----------------------------------------------------------------------------------------
    num_envs: int | None = None
    """Number of env copies (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""
    backend: Backend = "serial"
    """Vector backend: ``"serial"``, ``"multiprocessing"`` or ``"ray"``."""
    num_workers: int | None = None
    """Worker processes/actors (must divide ``num_envs``); None picks the backend's default."""
    env_batch_size: int | None = None
    """Envs per ``recv`` batch for asynchronous stepping (a multiple of ``num_envs // num_workers``);
    None steps every env together."""
    max_agents: int | None = None
    """Slots per PettingZoo env (default: ``len(possible_agents)``)."""
    env_timeout: float | None = 60.0
    """Seconds the multiprocessing and Ray workers may take to build their envs or answer a reset or step before
    training fails with a WorkerTimeoutError naming the worker, its envs and the call (the serial backend cannot
    interrupt its own envs); None waits for ever."""
    check_finite: bool = True
    """Fail with a NonFiniteError naming the env, slot, field and step when a reward or observation is NaN or
    infinite (about 0.4 microseconds per batch); False lets them through."""
    ray_address: str | None = None
    """Ray cluster to run the env actors on with ``backend="ray"`` (``HEAD_IP:6379``, ``ray://HEAD_IP:10001`` or
    ``auto``); None starts a local Ray. The learner stays in this process (see docs/scaling.md)."""

    # ---- rollout -------------------------------------------------------------------------------------------
    horizon: int | None = None
    """Segment length: consecutive transitions of one agent slot stored together (and the BPTT length); None: the
    algorithm's default (:data:`ALGO_DEFAULTS`)."""
    batch_size: int | None = None
    """Agent transitions per update (single-agent envs: a multiple of ``num_envs``); None means
    ``num_envs * agents_per_env * horizon``."""

    # ---- optimization --------------------------------------------------------------------------------------
    learning_rate: float | None = None
    """Adam learning rate (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""
    anneal_lr: bool | None = None
    """Decay the learning rate linearly to 0 over ``total_steps`` (None: the algorithm's default, on for PPO and
    MAPPO, off for SAC)."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    update_epochs: int | None = None
    """Passes over each batch (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""
    minibatch_size: int | None = None
    """Transitions per minibatch (whole segments for recurrent policies and prioritized sampling); None: the
    algorithm's default (:data:`ALGO_DEFAULTS`)."""
    max_grad_norm: float = 0.5
    """PPO, MAPPO and DT: clip the global gradient norm to this value (0 disables)."""
    target_kl: float | None = None
    """Stop the epochs of an update early once the approximate KL exceeds this (None: never)."""

    # ---- advantages ----------------------------------------------------------------------------------------
    gamma: float | None = None
    """Discount factor (some env presets set another, e.g. 0.9 for Pendulum-v1)."""
    gae_lambda: float | None = None
    """GAE lambda (default 0.95)."""
    advantage: Advantage = "gae"
    """``"gae"`` or ``"vtrace"`` (V-trace-clipped GAE, recomputed before each minibatch)."""
    vtrace_rho_clip: float = 1.0
    """V-trace clip of the importance ratio in the TD-error weight (``advantage="vtrace"``)."""
    vtrace_c_clip: float = 1.0
    """V-trace clip of the importance ratio in the trace (``advantage="vtrace"``)."""
    norm_adv: bool = True
    """Normalize advantages per minibatch (mean 0, std 1 over live transitions)."""

    # ---- PPO loss ------------------------------------------------------------------------------------------
    clip_coef: float = 0.2
    """PPO ratio clip."""
    dual_clip: float | None = None
    """Dual-clip constant ``c > 1`` bounding the loss of negative-advantage samples (None disables)."""
    clip_vloss: bool = True
    """Clip the value update around the old values with ``vf_clip_coef``."""
    vf_clip_coef: float = 0.2
    """Value clip range when ``clip_vloss``."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float | None = None
    """Weight of the entropy bonus (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""

    # ---- prioritized sampling and rewards ------------------------------------------------------------------
    prio_alpha: float = 0.0
    """Prioritized segment sampling exponent: segments drawn with probability
    ``|A|.sum() ** alpha``; 0 = uniform (off)."""
    prio_beta0: float = 0.2
    """Initial importance-correction exponent of prioritized sampling, annealed linearly to 1."""
    reward_scale: float = 1.0
    """Multiply rewards by this before learning (statistics report raw returns). 1 = off."""
    reward_clip: float | None = None
    """Clip (scaled) rewards to ``[-reward_clip, reward_clip]`` before learning; None = off."""
    reward_norm: bool | None = None
    """PPO and MAPPO: divide the rewards the learner sees by the running standard deviation of the discounted return
    (per row, restarting with each episode; the normalized rewards clipped to +-10), as Stable-Baselines3's
    ``VecNormalize`` does (:mod:`shoal.train.core.reward_norm`); ``reward_scale`` and ``reward_clip`` then apply to
    the normalized rewards. Statistics still report raw returns. None: the env preset's choice (e.g. on for PPO on
    MountainCar-v0), else off."""
    obs_norm: bool | None = None
    """PPO and MAPPO: the default policy normalizes its float ``Box`` observation leaves by the running mean and
    variance of the observations it trained on (clipped to +-10), as Stable-Baselines3's ``VecNormalize`` does;
    the statistics are part of the policy (checkpoints, ``shoal eval``, exports) and change only between rollouts
    (:mod:`shoal.policies.obs_stats`). Integer, bool and image leaves keep their fixed scaling, and so does a
    centralized critic's input (``critic_input``). None: the env preset's choice (on for PPO on MountainCar-v0),
    else off."""

    # ---- off-policy (SAC) -----------------------------------------------------------------------------------
    replay_size: int = 1_000_000
    """SAC: transitions the replay buffer keeps (allocated at start; its size in memory is printed)."""
    learning_starts: int = 1000
    """SAC: agent steps of uniformly random actions before the policy acts and the first gradient step."""
    utd_ratio: float = 1.0
    """SAC: gradient steps per agent step collected (the update-to-data ratio)."""
    tau: float = 0.005
    """SAC and IQL: Polyak averaging rate of the target critics."""
    n_step: int = 1
    """SAC: decisions of a slot joined into one transition (n-step returns, bootstrapping with ``gamma^n``)."""
    sac_alpha: float | None = None
    """SAC: a fixed entropy temperature; None tunes it towards ``target_entropy``."""
    target_entropy: float | None = None
    """SAC: the entropy the tuned temperature aims for (None: ``-action_dim`` for Box actions,
    ``0.89 * log(legal actions)`` per state for Discrete)."""
    save_replay: bool = True
    """SAC: checkpoints hold the replay buffer, so a resumed run continues exactly (False: smaller checkpoints; a
    resumed run refills its buffer from scratch)."""

    # ---- offline (BC, IQL) -----------------------------------------------------------------------------------
    eval_interval: int = 10
    """Offline algorithms: updates between online evaluations of the policy during training (and one after the last
    update), each playing one episode in each of the ``num_envs`` envs with the most likely actions; their returns
    are the logged ``charts/episode_return``. 0: none during training."""
    expectile: float = 0.7
    """IQL: the expectile of the state value's regression onto the target Q (0.5: the mean, the behaviour's value;
    towards 1: the best action seen in the data)."""
    iql_beta: float = 3.0
    """IQL: inverse temperature of the advantage-weighted actor (weights ``exp(iql_beta * (Q - V))``)."""
    iql_max_weight: float = 100.0
    """IQL: the actor's per-sample weights are clipped to at most this."""
    context_length: int = 20
    """DT: steps the Decision Transformer reads (its context ``K``: ``3K`` tokens of return-to-go, observation and
    action), in training windows and when acting."""
    target_return: float | None = None
    """DT: the return the Decision Transformer goes for when it acts (evaluations during and after training; saved
    with the model as the default of ``shoal eval``, which ``shoal eval --target-return`` overrides). None: the
    dataset's best episode return."""
    return_scale: float | None = None
    """DT: returns-to-go are divided by this before the model reads them. None: the dataset's largest absolute
    episode return (so they are about 1)."""
    dt_layers: int = 3
    """DT: transformer blocks."""
    dt_heads: int = 1
    """DT: attention heads per block (must divide ``hidden_size``, the width of the tokens)."""

    # ---- policy --------------------------------------------------------------------------------------------
    hidden_size: int | None = None
    """Width of the policy trunk (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""
    activation: Activation | None = None
    """Hidden-layer activation of the default policy (``shoal.policies.Policy``'s vector-leaf encoders and trunks):
    ``"relu"`` or ``"tanh"``. None: the env preset's choice (tanh for PPO on MountainCar-v0), else ReLU. SAC (ReLU
    MLPs) and DT (a GELU transformer) build networks of their own and take only the default, ``"relu"``."""
    recurrent: bool = False
    """Add an LSTM (BPTT over segments; state carried across rollouts, reset at episode starts)."""
    lstm_size: int = 64
    """LSTM hidden size."""
    async_learner: bool = False
    """Run PPO/MAPPO updates in a separate learner process while the next rollout is collected (not with
    ``league`` or several learners). Runs stay deterministic and resumable; see
    :mod:`shoal.train.speed.learner_process`."""
    async_handover: float = 0.5
    """With ``async_learner``: the fraction of each rollout collected before the acting policy waits for the
    update on the previous rollout and acts with its weights. Earlier transitions are acted by the weights one
    update older (PPO's clipping corrects for that). 0: no overlap, the one-process trainer's exact computation;
    1: full overlap, every transition one update stale."""
    trace_actor: bool = True
    """Replay the acting pass of rollouts through verified TorchScript traces (same results, less overhead);
    policies that cannot be traced exactly act eagerly."""
    trace_learner: bool = True
    """Replay each PPO minibatch's evaluation pass and loss (feed-forward policies) through verified TorchScript
    traces: the same losses and gradients, less overhead; a policy whose trace differs updates eagerly."""
    agent_ids: bool | None = None
    """Feed the slot index of each agent to the policy (an embedding), so shared parameters can specialize
    (None: the algorithm's default, :data:`ALGO_DEFAULTS`)."""
    critic_input: CriticInput | None = None
    """Centralized critic's global input (MAPPO, and SAC's twin critics when given): ``"state"`` (the PettingZoo
    env's ``state()``), ``"concat"`` (every slot of the env concatenated, masked; observation leaves of more than
    256 numbers, such as images, average-pooled down to at most 256) or ``"auto"`` (``state()`` when the env has a
    flat one of at most 4096 numbers, else ``"concat"``). None: the algorithm's default (:data:`ALGO_DEFAULTS`):
    ``"auto"`` for MAPPO; for SAC None keeps the critics decentralized (each reads its slot's observation)."""
    critic_residual: bool | None = None
    """MAPPO: the centralized critic is a local critic (the slot's own observation features and one-hots) plus an
    MLP over the whole critic input as a residual whose output weights start at zero
    (:class:`~shoal.policies.policy.ResidualCritic`); False: one MLP over the whole input. None: the algorithm's
    default (:data:`ALGO_DEFAULTS`)."""
    critic_memory_limit: float = 4.0
    """MAPPO and SAC with ``critic_input``: largest size in GiB of the stored critic inputs (float32; MAPPO: one
    row per transition of a rollout, SAC: two per replay transition, its input and the next one); more is refused
    before anything is allocated."""
    value_norm: ValueNorm = "auto"
    """Value normalization: ``"running"`` (running mean/std of the returns), ``"popart"``, ``"none"`` or
    ``"auto"`` (the env preset's choice if it makes one, e.g. running for PPO on Acrobot-v1; else running for
    MAPPO, none for PPO)."""

    # ---- self-play league (shoal.train.selfplay.league) -------------------------------------------------------------
    league: bool = False
    """Self-play league for PettingZoo games: per episode the learner takes a random seat, frozen snapshots of
    itself (or scripted baselines) take the others, only the learner's rows are trained on, and every game
    updates ELO ratings (``run_dir/league.json``, ``shoal league RUN``)."""
    league_opponents: str = "auto"
    """Opponent mix: ``"auto"`` (the game's preset, see ``LEAGUE_PRESETS``, e.g. tic-tac-toe
    ``self:0.5,uniform:0.1,solver:0.25,heuristic:0.15``; games without one ``self:0.8,uniform:0.2``) or
    ``name[:weight],...`` with names ``self`` (the live learner takes the seat too, and learns from it),
    ``latest`` (the newest frozen snapshot), ``uniform`` (over past snapshots), ``pfsp``
    (prioritized fictitious self-play), ``random``, ``heuristic``, ``solver`` (tic-tac-toe), ``alphabeta[@depth]``
    (connect four): scripted baselines, fixed-rating anchors."""
    league_snapshot_interval: int = 10
    """Updates between snapshots of the learner added to the opponent pool."""
    league_k: float = 32.0
    """ELO K factor of the league's ratings."""
    league_rating_games: int = 16
    """Games each new snapshot plays (seats alternating, sampling its actions) against the previous snapshot, one
    older snapshot drawn at random and every scripted anchor of the mix; these games among frozen players are what
    rates the snapshots (the learner's own games move only its rating). 0: no such games (snapshots keep the
    rating they entered with)."""
    league_pool_size: int | None = None
    """Most snapshots in the opponent pool (0: no limit; None: :data:`LEAGUE_POOL_SIZE`, 500, or for a resumed run
    the size it was saved with). When a new snapshot makes the pool larger, the oldest leave it: they are no longer
    drawn as opponents or rating partners, their weights are freed (those seated in a game still being played once
    it ends) and their files deleted once no kept checkpoint names them, so memory and disk stay bounded in long
    runs; their ratings stay in ``league.json``. A 30-minute connect-four run on 2 cores takes about 250."""

    # ---- logging, checkpoints, evaluation ------------------------------------------------------------------
    log_interval: float = 1.0
    """Seconds between logged scalar rows (always one after the last update)."""
    checkpoint_interval: int = 50
    """Updates between checkpoints (always one after the last update); 0 = only the last."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    tensorboard: bool = True
    """Write TensorBoard event files into ``run_dir/tensorboard``."""
    wandb: bool = False
    """Also log to Weights & Biases (files in ``run_dir/wandb``; see ``wandb_mode``)."""
    wandb_mode: WandbMode | None = None
    """Weights & Biases mode: ``"offline"`` (upload later with ``wandb sync``), ``"online"`` or ``"disabled"``;
    None: the ``WANDB_MODE`` environment variable, else ``"offline"``."""
    wandb_project: str = "shoal"
    """Weights & Biases project name."""
    stats_window: int = 100
    """Episodes averaged in the reported episode return and length."""
    eval_episodes: int = 0
    """Episodes of deterministic evaluation after training (0 = none)."""
    record_dataset: str | None = None
    """Write every decision of the learner's slots (everything the run collected, as per-slot episodes of raw
    rewards, see shoal.datasets.EpisodeRecorder) to a Minari dataset directory at this path when training ends or
    is interrupted; held in memory until then. An existing dataset there is replaced only with ``overwrite``; a
    resumed run records from where it resumes: give it a new path (a dataset the run recorded before is refused
    even with ``overwrite``; both parts can be loaded and trained on). Not with several data-parallel learners."""

    # ---- resolution and validation ------------------------------------------------------------------------

    def resolved(self, agents_per_env: int | None = None) -> TrainConfig:
        """A validated copy whose fields left at None hold the algorithm's defaults (:data:`ALGO_DEFAULTS`).

        Args:
            agents_per_env: agent slots per env of the env being trained; given, ``batch_size`` is derived when
                None (``num_envs * agents_per_env * horizon``). For single-agent envs a given ``batch_size`` must
                be a multiple of ``num_envs`` (every step adds that many transitions); multi-agent rollouts end
                at the first step that reaches ``batch_size`` live transitions.

        Raises:
            APIUsageError: naming the first bad field and how to fix it.
        """
        self._check_choices()
        out = dataclasses.replace(self, **self.preset_fields())
        out = dataclasses.replace(out, **{name: value for name, value in ALGO_DEFAULTS[self.algo].items()
                                          if getattr(out, name) is None})
        if out.league_pool_size is None:
            out.league_pool_size = LEAGUE_POOL_SIZE
        if agents_per_env is not None and isinstance(out.num_envs, int) and isinstance(out.horizon, int):
            rows = out.num_envs * agents_per_env
            if out.batch_size is None:
                out.batch_size = rows * out.horizon
            elif agents_per_env == 1 and isinstance(out.batch_size, int) and out.batch_size % rows:
                nearest = sorted({max(rows, out.batch_size // rows * rows), (out.batch_size // rows + 1) * rows})
                raise APIUsageError(
                    f"batch_size={out.batch_size} is not a multiple of num_envs={rows} (each step of the vector "
                    f"env adds {rows} transitions); use --batch-size {' or '.join(map(str, nearest))}"
                )
        out._check()
        return out

    def preset_fields(self) -> dict[str, Any]:
        """The fields :meth:`resolved` takes from the env's preset (:data:`ENV_PRESETS`): those of the entry for
        this algorithm and ``env`` that this config leaves unset (None, or ``"auto"`` for ``value_norm``)."""
        if self.preset == "none":
            return {}
        entry = ENV_PRESETS.get(self.algo, {}).get(self.env, {})
        return {name: value for name, value in entry.items() if getattr(self, name) in (None, "auto")}

    def validate(self) -> TrainConfig:
        """Raise :class:`~shoal.errors.APIUsageError` naming the first bad field; return self (unchanged:
        :meth:`resolved` fills in the algorithm's defaults)."""
        self.resolved()
        return self

    def _check_choices(self) -> None:
        """Every field typed as a ``Literal`` holds one of its values."""
        hints = _type_hints()
        for f in dataclasses.fields(self):
            hint = hints[f.name]
            optional = type(None) in typing.get_args(hint)
            if optional:  # ``Literal[...] | None``: None is one of the choices
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
            if choices is not None and optional:
                choices = (*choices, None)
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise APIUsageError(f"{f.name}={value!r} is unknown; valid choices: {list(choices)}")

    def _check(self) -> None:
        """Validate a resolved config (no field left at None that needs a value)."""
        positive = (
            "total_steps",
            "num_envs",
            "horizon",
            "update_epochs",
            "minibatch_size",
            "hidden_size",
            "lstm_size",
            "keep_checkpoints",
            "stats_window",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise APIUsageError(f"{name} must be a positive int, got {value!r}")
        for name in ("seed", "torch_threads", "checkpoint_interval", "eval_episodes", "eval_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise APIUsageError(f"{name} must be a non-negative int, got {value!r}")
        for f in dataclasses.fields(self):
            if f.type in ("bool", "bool | None", bool) and not isinstance(getattr(self, f.name), bool):
                raise APIUsageError(f"{f.name} must be True or False, got {getattr(self, f.name)!r}")
        for name in ("batch_size", "num_workers", "env_batch_size", "max_agents"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise APIUsageError(f"{name} must be a positive int or None, got {value!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise APIUsageError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise APIUsageError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        for name in (
            "learning_rate",
            "clip_coef",
            "vtrace_rho_clip",
            "vtrace_c_clip",
            "reward_scale",
            "adam_eps",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise APIUsageError(f"{name} must be a positive number, got {value!r}")
        limit = self.critic_memory_limit
        if isinstance(limit, bool) or not (isinstance(limit, int | float) and math.isfinite(limit) and limit > 0):
            raise APIUsageError(f"critic_memory_limit must be a positive number of GiB, got {limit!r}")
        for name in ("max_grad_norm", "vf_coef", "ent_coef", "vf_clip_coef", "prio_alpha", "log_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise APIUsageError(f"{name} must be a non-negative number, got {value!r}")
        if not 0.0 <= self.prio_beta0 <= 1.0:
            raise APIUsageError(f"prio_beta0 must be in [0, 1], got {self.prio_beta0}")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise APIUsageError(f"dual_clip must be > 1 (or None to disable), got {self.dual_clip}")
        if self.reward_clip is not None and not self.reward_clip > 0:
            raise APIUsageError(f"reward_clip must be > 0 (or None to disable), got {self.reward_clip}")
        if self.activation != "relu" and self.algo in ("sac", "dt"):
            raise APIUsageError(f"activation={self.activation!r}: algo={self.algo!r} builds its own networks "
                                f"({'ReLU MLPs' if self.algo == 'sac' else 'a GELU transformer'}), whose activation "
                                "is fixed; drop --activation")
        if self.reward_norm and self.algo not in ("ppo", "mappo"):
            raise APIUsageError(f"reward_norm normalizes the rewards of PPO and MAPPO rollouts; algo={self.algo!r} "
                                "does not support it (drop --reward-norm)")
        if self.obs_norm and self.algo not in ("ppo", "mappo"):
            raise APIUsageError(f"obs_norm keeps running observation statistics updated between PPO and MAPPO "
                                f"rollouts; algo={self.algo!r} does not support it (drop --obs-norm)")
        if self.critic_residual and self.algo != "mappo":
            raise APIUsageError(f"critic_residual shapes MAPPO's centralized critic; algo={self.algo!r} has none "
                                "(drop --critic-residual, or use --algo mappo)")
        if self.target_kl is not None and not self.target_kl > 0:
            raise APIUsageError(f"target_kl must be > 0 (or None to disable), got {self.target_kl}")
        if self.algo == "sac":
            self._check_sac()
        elif self.algo in OFFLINE_ALGOS:
            self._check_offline()
        elif self.batch_size is not None and self.minibatch_size > self.batch_size:
            raise APIUsageError(
                f"minibatch_size={self.minibatch_size} is larger than batch_size={self.batch_size}; "
                "lower --minibatch-size or raise --batch-size"
            )
        if (self.recurrent or self.prio_alpha > 0) and self.minibatch_size < self.horizon:
            raise APIUsageError(
                f"minibatch_size={self.minibatch_size} < horizon={self.horizon}: recurrent policies and "
                "prioritized sampling train on whole segments, so a minibatch needs at least one segment"
            )
        if self.env_batch_size is not None and self.env_batch_size > self.num_envs:
            raise APIUsageError(f"env_batch_size={self.env_batch_size} exceeds num_envs={self.num_envs}")
        if self.env_timeout is not None and not (isinstance(self.env_timeout, int | float)
                                                 and not isinstance(self.env_timeout, bool)
                                                 and math.isfinite(self.env_timeout) and self.env_timeout > 0):
            raise APIUsageError(f"env_timeout must be a positive number of seconds or None, got {self.env_timeout!r}")
        if self.ray_address is not None and self.backend != "ray":
            raise APIUsageError(f"ray_address={self.ray_address!r} needs backend='ray' (got {self.backend!r}); "
                                "add --backend ray")
        if self.league:
            parse_mix(self.league_opponents)
            if isinstance(self.league_snapshot_interval, bool) or not isinstance(self.league_snapshot_interval, int) \
                    or self.league_snapshot_interval < 1:
                raise APIUsageError(f"league_snapshot_interval must be a positive int, got "
                                    f"{self.league_snapshot_interval!r}")
            if not (isinstance(self.league_k, int | float) and math.isfinite(self.league_k) and self.league_k > 0):
                raise APIUsageError(f"league_k must be a positive number, got {self.league_k!r}")
            if isinstance(self.league_rating_games, bool) or not isinstance(self.league_rating_games, int) \
                    or self.league_rating_games < 0:
                raise APIUsageError(f"league_rating_games must be an int >= 0, got {self.league_rating_games!r}")
            if isinstance(self.league_pool_size, bool) or not isinstance(self.league_pool_size, int) \
                    or self.league_pool_size < 0:
                raise APIUsageError(f"league_pool_size must be an int >= 0 (0: no limit), got "
                                    f"{self.league_pool_size!r}")
        if isinstance(self.async_handover, bool) or not (
            isinstance(self.async_handover, int | float) and 0.0 <= self.async_handover <= 1.0
        ):
            raise APIUsageError(f"async_handover must be a fraction in [0, 1], got {self.async_handover!r}")
        if self.async_learner and self.league:
            raise APIUsageError("async_learner=True cannot train a self-play league (its opponents follow the "
                                "learner's updates); drop --async-learner or --league")
        if self.record_dataset is not None and not (isinstance(self.record_dataset, str) and self.record_dataset):
            raise APIUsageError(f"record_dataset must be a directory path or None, got {self.record_dataset!r}")
        if self.wandb and self.run_dir is None:
            raise APIUsageError("wandb=True needs a run_dir to hold the run's files (give --run-dir)")
        if self.wandb_mode is not None and self.wandb_mode not in typing.get_args(WandbMode):
            raise APIUsageError(f"wandb_mode={self.wandb_mode!r} is unknown; valid choices: "
                                f"{list(typing.get_args(WandbMode))} or None (WANDB_MODE, else 'offline')")
        for name in ("target_return", "return_scale"):
            if getattr(self, name) is not None and self.algo != "dt":
                raise APIUsageError(f"{name}={getattr(self, name)!r} conditions the Decision Transformer; "
                                    f"algo={self.algo!r} takes none: drop --{name.replace('_', '-')} or train with "
                                    "--algo dt")
        if self.dataset is not None and self.algo not in OFFLINE_ALGOS:
            raise APIUsageError(f"dataset={self.dataset!r} is read by the offline algorithms {list(OFFLINE_ALGOS)} "
                                f"only; algo={self.algo!r} collects its own experience: drop --dataset or choose "
                                f"one of them (--algo {' / '.join(OFFLINE_ALGOS)})")
        parse_wrappers(self.wrappers)
        if not isinstance(self.env_kwargs, dict):
            raise APIUsageError(f"env_kwargs must be a dict, got {type(self.env_kwargs).__name__}")
        return self

    def _check_sac(self) -> None:
        for name in ("replay_size", "learning_starts", "n_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name != "learning_starts"):
                raise APIUsageError(f"{name} must be a {'non-negative' if name == 'learning_starts' else 'positive'} "
                                    f"int, got {value!r}")
        if not (isinstance(self.utd_ratio, int | float) and math.isfinite(self.utd_ratio) and self.utd_ratio > 0):
            raise APIUsageError(f"utd_ratio must be a positive number of gradient steps per agent step, got "
                                f"{self.utd_ratio!r}")
        if not (isinstance(self.tau, int | float) and 0.0 < self.tau <= 1.0):
            raise APIUsageError(f"tau must be in (0, 1], got {self.tau!r}")
        if self.sac_alpha is not None and not (isinstance(self.sac_alpha, int | float) and self.sac_alpha > 0):
            raise APIUsageError(f"sac_alpha must be > 0 (or None to tune it), got {self.sac_alpha!r}")
        refused = {"league": "a self-play league", "async_learner": "a learner process",
                   "recurrent": "an LSTM policy"}
        for name, what in refused.items():
            if getattr(self, name):
                flag = "--" + name.replace("_", "-")
                raise APIUsageError(f"algo='sac' does not support {what} ({name}=True); drop {flag} or train with "
                                    "--algo ppo")

    def _check_offline(self) -> None:
        if self.algo == "dt":
            self._check_dt()
        if self.dataset is not None and not (isinstance(self.dataset, str) and self.dataset):
            raise APIUsageError(f"dataset must be a path (a non-empty string) or None, got {self.dataset!r}")
        if not (isinstance(self.tau, int | float) and 0.0 < self.tau <= 1.0):
            raise APIUsageError(f"tau must be in (0, 1], got {self.tau!r}")
        if not (isinstance(self.expectile, int | float) and 0.0 < self.expectile < 1.0):
            raise APIUsageError(f"expectile must be in (0, 1) (IQL uses 0.7; 0.5 regresses onto the mean), got "
                                f"{self.expectile!r}")
        for name in ("iql_beta", "iql_max_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise APIUsageError(f"{name} must be a positive number, got {value!r}")
        refused = {"league": "a self-play league", "async_learner": "a learner process",
                   "recurrent": "an LSTM policy"}
        for name, what in refused.items():
            if getattr(self, name):
                flag = "--" + name.replace("_", "-")
                raise APIUsageError(f"algo={self.algo!r} does not support {what} ({name}=True); drop {flag}")
        if self.record_dataset is not None:
            raise APIUsageError(f"algo={self.algo!r} collects no experience to record; drop --record-dataset (shoal "
                                "record RUN_DIR records the trained policy's play)")
        if self.env_batch_size is not None and self.env_batch_size != self.num_envs:
            raise APIUsageError(f"algo={self.algo!r} evaluates on every env at once, so env_batch_size="
                                f"{self.env_batch_size} (fewer than num_envs={self.num_envs}) does not apply; "
                                "drop --env-batch-size")

    def _check_dt(self) -> None:
        for name in ("context_length", "dt_layers", "dt_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise APIUsageError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.dt_heads:
            raise APIUsageError(f"dt_heads={self.dt_heads} must divide hidden_size={self.hidden_size} (the width of "
                                "the Decision Transformer's tokens)")
        if self.target_return is not None and (isinstance(self.target_return, bool) or not (
                isinstance(self.target_return, int | float) and math.isfinite(self.target_return))):
            raise APIUsageError(f"target_return must be a finite number or None, got {self.target_return!r}")
        if self.return_scale is not None and (isinstance(self.return_scale, bool) or not (
                isinstance(self.return_scale, int | float) and math.isfinite(self.return_scale)
                and self.return_scale > 0)):
            raise APIUsageError(f"return_scale must be a positive number or None, got {self.return_scale!r}")
        if self.agent_ids:
            raise APIUsageError("algo='dt' does not embed agent ids (agent_ids=True): drop --agent-ids")

    # ---- (de)serialization ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise :class:`APIUsageError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise APIUsageError(f"unknown config field(s) {unknown}; valid fields: {sorted(names)}")
        if "preset" not in data:  # written before env presets: resuming it must not start using one
            data = {**data, "preset": "none"}
            if data.get("algo") == "sac" and data.get("critic_input") == "auto":
                data["critic_input"] = None  # SAC then had no centralized critics: its "auto" meant nothing
        if "activation" not in data:  # written before activation and reward_norm: ReLU on raw rewards
            data = {**data, "activation": "relu", "reward_norm": False}
            key = (data.get("algo", "ppo"), data.get("env", ""))
            preset = ENV_PRESETS.get(key[0], {}).get(key[1], {})
            # a preset added with those fields would fill what the config left unset; older presets still apply
            if key in _PRESETS_SINCE_ACTIVATION and any(data.get(name) is None for name in preset):
                data["preset"] = "none"
        if "obs_norm" not in data:  # written before obs_norm: no statistics, and the preset's settings of then
            data = {**data, "obs_norm": False}
            before = _PRESETS_BEFORE_OBS_NORM.get((data.get("algo", "ppo"), data.get("env", "")), {})
            if data.get("preset", "auto") != "none":
                data.update({name: value for name, value in before.items() if data.get(name) is None})
        if "critic_residual" not in data:  # written before the residual critic: one MLP over the whole input
            data = {**data, "critic_residual": False}
        if "league_pool_size" not in data:  # written before the pool had a limit: it trained with none
            data = {**data, "league_pool_size": 0}
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@functools.cache
def _type_hints() -> dict[str, Any]:
    """:class:`TrainConfig`'s field types, evaluated once (the annotations are strings)."""
    return typing.get_type_hints(TrainConfig)


def field_docs(cls: type = TrainConfig) -> dict[str, str]:
    """Field name -> its docstring (the string literal under the field) as plain text, for ``--help``."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. frozen app)
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = plain_text(following.value.value)
    return docs


def plain_text(text: str) -> str:
    """``text`` (reStructuredText of a docstring) without its markup, on one line: ``:class:`~a.B``` -> ``B``,
    ``:mod:`a.b``` -> ``a.b``, double backquotes dropped."""
    text = re.sub(r":[a-z]+:`~([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())
