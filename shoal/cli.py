"""The ``shoal`` command line: ``shoal train|eval|record|league|plot|list``.

Every command ends with one machine-readable JSON line on stdout (``--json`` prints only that line); human
output (the live dashboard, summaries) goes before it, the dashboard to stderr. Every failure prints ``shoal:
error: ...`` on stderr and a JSON line ``{"command": ..., "ok": false, "error": ...}`` on stdout, and exits with:

* 0: success (``shoal train`` also when only its final evaluation failed: ``"evaluation": {"error": ...}``);
* 1: interrupted (Ctrl-C, or SIGTERM); ``shoal train`` first saves a checkpoint of its last completed update
  and names it (``"checkpoint"``; ``--resume`` continues from it);
* 2: an error in the input or the data: bad arguments, unknown env, unreadable or refused checkpoint, missing
  file (a :class:`~shoal.errors.ShoalError` or ``FileNotFoundError``);
* 3: an unexpected error (an exception from shoal, the env or a library): its traceback goes to stderr, the JSON
  line has ``"error_type"``.

    shoal train CartPole-v1 --total-steps 150000 --seed 1 --run-dir runs/cartpole --eval-episodes 20
    shoal train memory --recurrent --total-steps 50000
    shoal train pettingzoo.butterfly.knights_archers_zombies_v11 --num-envs 2
    shoal train mpe2.simple_spread_v3 --algo mappo
    shoal train CartPole-v1 --run-dir runs/cartpole --resume
    shoal eval runs/cartpole --episodes 100
    shoal eval runs/cartpole --episodes 3 --video cartpole.mp4
    shoal train ale_py:ALE/Breakout-v5 --wrappers "color_reduction_v0(mode='full'),resize_v1(84,84),frame_stack_v1(4)"
    shoal train pettingzoo.classic.connect_four_v3 --league --run-dir runs/c4
    shoal eval runs/c4 --opponent heuristic --episodes 200
    shoal league runs/c4 --plot
    shoal record runs/cartpole --steps 50000 --out data/cartpole-medium
    shoal record solver --env pettingzoo.classic.tictactoe_v3 --steps 20000 --epsilon 0.2 --out data/ttt
    shoal plot runs/cartpole
    shoal list

``shoal train`` takes every field of :class:`~shoal.train.config.TrainConfig` as a ``--kebab-case`` flag
(``shoal train --help`` lists them with their docstrings).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import re
import sys
import time
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from shoal.errors import APIUsageError, ShoalError
from shoal.interrupts import signal_name, terminate_as_interrupt

__all__ = ["main"]

log = logging.getLogger("shoal.cli")

#: Exit statuses (see the module docstring).
EXIT_OK, EXIT_INTERRUPTED, EXIT_ERROR, EXIT_UNEXPECTED = 0, 1, 2, 3

_EPILOG = (
    "Every command ends with one JSON line on stdout ({\"ok\": false, \"error\": ...} on failure). Exit status: 0 "
    "success; 1 interrupted; 2 bad input or data (arguments, env, checkpoint); 3 unexpected error (traceback on "
    "stderr)."
)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a JSON line too."""

    command = "shoal"

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _fail(self.command, f"{message}", code=2)


def _emit(payload: dict[str, Any]) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 speaks for every learner
        return
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def _fail(command: str, message: str, code: int = 2, **extra: Any) -> NoReturn:
    sys.stderr.write(f"shoal: error: {message}\n")
    _emit({"command": command, "ok": False, "error": message, **extra})
    raise _Exit(code)


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False) and os.environ.get("RANK", "0") == "0":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------------

#: Fields with their own, hand-written arguments (not auto-generated).
_MANUAL = {"env", "resume"}


def _parse_optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _parse_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}); e.g. '{{\"length\": 6}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"length\": 6}'")
    return value


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from shoal.train.config import ALGO_DEFAULTS, TrainConfig, field_docs

    docs = field_docs(TrainConfig)
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _MANUAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        base = args[0] if optional and len(args) == 1 else hint
        help_text = docs.get(f.name, "")
        if f.name == "run_dir":  # the API's default writes nothing; the command line always keeps a run
            help_text = ("Directory for the config, checkpoints, TensorBoard events and the scalars CSV (default: a "
                         "new directory runs/ENV-sSEED-DATE-TIME, with -2, -3... when that name is taken)")
        elif f.name in ALGO_DEFAULTS["ppo"]:
            per_algo = ", ".join(f"{algo} {values[f.name]}" for algo, values in ALGO_DEFAULTS.items())
            help_text = f"{help_text} (default: per algorithm, {per_algo})"
        elif f.name != "run_dir":
            help_text = f"{help_text} (default: {getattr(defaults, f.name)!r})"
        help_text = help_text.replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        choices = list(typing.get_args(base)) if typing.get_origin(base) is typing.Literal else None
        parse: Callable[[str], Any] = {int: int, float: float}.get(base, str)
        if typing.get_origin(base) is dict:
            parse = _parse_dict
        parser.add_argument(
            flag,
            dest=f.name,
            type=_parse_optional(parse) if optional else parse,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=f.name.upper() if choices is None else None,
            help=help_text,
        )


def claim_run_dir(base: Path) -> Path:
    """Create and return a fresh directory ``base`` (or ``base-2``, ``base-3``...): runs started in the same second
    with the same env and seed each get their own default run directory, never one another's."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()  # atomic: exactly one process creates it
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def _slug(text: str) -> str:
    return (
        re.sub(
            r"[^A-Za-z0-9_.-]+", "-", text.rsplit(".", 1)[-1] if text.startswith("pettingzoo.") else text
        ).strip("-")
        or "run"
    )


def _train_config(args: argparse.Namespace) -> Any:
    from shoal.train.config import TrainConfig

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in _MANUAL and hasattr(args, f.name)
    }
    if args.resume:
        if overrides.get("run_dir") is None:
            raise APIUsageError("--resume needs --run-dir (the run to continue)")
        config_file = Path(overrides["run_dir"]) / "config.json"
        if not config_file.is_file():
            raise APIUsageError(
                f"--resume: {config_file} does not exist; is {overrides['run_dir']} a shoal run directory?"
            )
        saved = TrainConfig.load(config_file)
        if saved.env != args.env:
            raise APIUsageError(
                f"--resume: the run in {overrides['run_dir']} trains {saved.env!r}, not {args.env!r}"
            )
        # the league's pool size: the checkpoint's (an API resume may have changed it), unless given
        config = saved.replace(**{"league_pool_size": None, **overrides}, resume=True)
    else:
        if overrides.get("run_dir") is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{_slug(args.env)}-s{overrides.get('seed', 0)}-{stamp}"
            args.default_run_dir = True  # claimed by cmd_train once the env is known to build
            return TrainConfig(env=args.env, **{**overrides, "run_dir": str(Path("runs") / name)}).validate()
        config = TrainConfig(env=args.env, **overrides)
    return config.validate()


def _check_env_kwargs(env: str, env_kwargs: dict[str, Any] | None) -> None:
    """Make the env once when --env-kwargs were given, so that a bad keyword is reported as such (exit 2)."""
    if not env_kwargs:
        return
    from shoal.train.runs.resolve import resolve_env

    env_fn = resolve_env(env, env_kwargs)
    try:
        instance = env_fn()
    except ShoalError:
        raise
    except Exception as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        raise APIUsageError(
            f"cannot make env {env!r} with --env-kwargs {json.dumps(env_kwargs)}: {type(exc).__name__}: {exc}; fix "
            "the keyword arguments (see the env's documentation)"
        ) from exc
    try:
        instance.close()
    except Exception:  # closing a probe env is best effort
        log.debug("closing the probe env failed", exc_info=True)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.train.api import make_trainer
    from shoal.train.runs.logger import Dashboard

    config = _train_config(args)
    _check_env_kwargs(config.env, config.env_kwargs)
    claimed = None
    if getattr(args, "default_run_dir", False):
        claimed = claim_run_dir(Path(config.run_dir))
        config = config.replace(run_dir=str(claimed))
    callbacks = []
    if not args.json and not args.no_dashboard:
        callbacks.append(
            Dashboard(sys.stderr, title=f"shoal {config.algo} · {config.env} · {config.run_dir}")
        )
    try:
        trainer = make_trainer(config, callbacks=callbacks)  # one of several learners under torchrun
    except BaseException:
        if claimed is not None and not any(claimed.iterdir()):
            claimed.rmdir()  # a run that never started leaves no empty directory behind
        raise
    for text in trainer.describe():
        _say(args, text)
    try:
        with terminate_as_interrupt():  # again: ray.init (in make_trainer) installs a SIGTERM handler of its own
            result = trainer.train()
    except KeyboardInterrupt as exc:  # train() saved the last completed update
        checkpoint = trainer.last_checkpoint
        how = "interrupted" if signal_name(exc) == "SIGINT" else f"stopped by {signal_name(exc)}"
        _fail(
            "train",
            f"{how} at step {trainer.global_step:,} (update {trainer.update:,}); the last checkpoint is "
            f"{checkpoint}" + ("" if checkpoint is None else f" (continue with --run-dir {config.run_dir} --resume)")
            + ("" if trainer.dataset_path is None else f"; the data collected is in {trainer.dataset_path}"),
            code=EXIT_INTERRUPTED,
            checkpoint=None if checkpoint is None else str(checkpoint),
            dataset=None if trainer.dataset_path is None else str(trainer.dataset_path),
            run_dir=config.run_dir,
            global_step=trainer.global_step,
            signal=signal_name(exc),
        )
    summary = result.summary()
    _say(
        args,
        f"trained {summary['global_step']:,} steps in {summary['seconds']:.1f} s "
        f"({summary['sps']:,.0f} steps/s); run directory {summary['run_dir']}",
    )
    if result.episode_return is not None:
        _say(args, f"training episode return (last {config.stats_window}): {result.episode_return:.2f}")
    if result.dataset is not None:
        _say(args, f"wrote every decision the run collected to the dataset {result.dataset}")
    extra: dict[str, Any] = {}
    if result.evaluation is not None and "error" in result.evaluation:
        # training succeeded and is saved: a failed evaluation is reported, not turned into a failure
        extra["evaluation"] = {"error": result.evaluation["error"]}
        _say(args, f"evaluation failed: {result.evaluation['error']}")
    elif result.evaluation is not None:
        sampled = result.evaluation.get("stochastic", {})
        also = "" if sampled.get("mean_return") is None else f" ({sampled['mean_return']:.2f} sampling actions)"
        _say(
            args,
            f"evaluation: mean return {result.evaluation['mean_return']:.2f} over "
            f"{result.evaluation['episodes']} episodes with the most likely actions{also}",
        )
    return {"command": "train", "ok": True, **summary, **extra}


# ------------------------------------------------------------------------------------------------------------
# eval, plot, list
# ------------------------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.train.runs.evaluate import evaluate_checkpoint

    if args.episodes < 1:
        raise APIUsageError(f"--episodes must be >= 1, got {args.episodes}")
    if args.max_steps is not None and args.max_steps < 1:
        raise APIUsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.opponent is not None:
        if args.video is not None or args.render:
            raise APIUsageError("--video and --render do not apply with --opponent; evaluate without it to watch")
        if args.target_return is not None:
            raise APIUsageError("--target-return does not apply with --opponent (games between two players); "
                                "evaluate without --opponent to condition a Decision Transformer")
        if args.env is not None or args.env_kwargs is not None:
            raise APIUsageError("--env and --env-kwargs do not apply with --opponent: games are played on the env "
                                "of RUN_OR_CHECKPOINT")
        return _eval_match(args)
    if args.env is not None:
        _check_env_kwargs(args.env, args.env_kwargs)
    result = evaluate_checkpoint(
        args.target,
        args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
        device=args.device,
        env=args.env,
        env_kwargs=args.env_kwargs,
        max_steps=args.max_steps,
        video=args.video,
        render=args.render,
        fps=args.fps,
        target_return=args.target_return,
    )
    if "video" in result:
        _say(args, f"wrote {result['video']} ({result['frames']} frames)")
    _say(
        args,
        f"{result['env']}: mean return {result['mean_return']:.2f} ± {result['std_return']:.2f} over "
        f"{result['episodes']} episodes ({'stochastic' if args.stochastic else 'deterministic'} actions; "
        f"{result['checkpoint']})",
    )
    returns = result.pop("returns")
    return {"command": "eval", "ok": True, **result, "returns": [round(r, 4) for r in returns]}


def _eval_match(args: argparse.Namespace) -> dict[str, Any]:
    """``shoal eval TARGET --opponent X``: games between two players, win rates with 95% Wilson intervals."""
    from shoal.train.selfplay.league import evaluate_match

    result = evaluate_match(args.target, args.opponent, args.episodes, seed=args.seed,
                            deterministic=not args.stochastic, device=args.device)
    lo, hi = result["win_rate_ci"]
    _say(
        args,
        f"{result['env']}: {result['player']} vs {result['opponent']} over {result['games']} games: "
        f"{result['wins']} wins, {result['draws']} draws, {result['losses']} losses; win rate "
        f"{result['win_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}), score {result['score']:.3f} "
        f"(ELO difference {result['elo_difference']:+.0f}); "
        f"{'stochastic' if args.stochastic else 'deterministic'} actions",
    )
    return {"command": "eval", "ok": True, **result}


def cmd_record(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.datasets.minari_io import check_output_path, save_dataset
    from shoal.interrupts import deferred_signals
    from shoal.train.record import RecordingInterrupted, record_dataset

    if args.steps < 1:
        raise APIUsageError(f"--steps must be >= 1, got {args.steps}")
    check_output_path(args.out, args.overwrite)  # before the rollout, not after it
    if args.env is not None:
        _check_env_kwargs(args.env, args.env_kwargs)
    try:
        dataset = record_dataset(args.source, args.env, args.steps, epsilon=args.epsilon,
                                 deterministic=args.deterministic, seed=args.seed, num_envs=args.num_envs,
                                 env_kwargs=args.env_kwargs, device=args.device)
    except RecordingInterrupted as exc:  # write what was recorded, then exit as interrupted
        how = "interrupted" if exc.signal_name == "SIGINT" else f"stopped by {exc.signal_name}"
        path = None
        try:
            with deferred_signals():
                path = save_dataset(exc.dataset, args.out, overwrite=args.overwrite)
        except KeyboardInterrupt:  # another signal during the write: delivered after it, when it is written whole
            if path is None:
                raise
        _fail("record", f"{how} after {exc.dataset.num_steps:,} of {args.steps:,} steps; wrote the "
                        f"{exc.dataset.num_episodes:,} episodes recorded so far (running ones end truncated) to {path}",
              code=EXIT_INTERRUPTED, signal=exc.signal_name, path=str(path), steps=exc.dataset.num_steps,
              episodes=exc.dataset.num_episodes)
    path = save_dataset(dataset, args.out, overwrite=args.overwrite)
    mean_return = float(dataset.episode_returns().mean())
    _say(args, f"{dataset.metadata['env']}: recorded {dataset.num_episodes} episodes, {dataset.num_steps} steps, mean "
               f"return {mean_return:.2f} ({dataset.metadata['source']}); wrote {path}")
    return {"command": "record", "ok": True, "env": dataset.metadata["env"], "source": dataset.metadata["source"],
            "episodes": dataset.num_episodes, "steps": dataset.num_steps, "mean_return": mean_return,
            "path": str(path)}


def cmd_league(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.train.selfplay.league import format_league, load_league, plot_league

    table = load_league(args.run_dir)
    _say(args, format_league(table))
    png = None
    if args.plot:
        png = plot_league(table, args.out or Path(args.run_dir) / "league.png")
        _say(args, f"wrote {png}")
    players = [{**row, "record": table.players[row["id"]].record} for row in table.rows()]
    return {"command": "league", "ok": True, "run_dir": str(args.run_dir), "k": table.k,
            "total_games": table.total_games, "players": players, "png": None if png is None else str(png)}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.bench import measure_throughput
    from shoal.train.runs.resolve import resolve_env

    env_fn = resolve_env(args.env)
    result = measure_throughput(env_fn, num_envs=args.num_envs, backend=args.backend, num_workers=args.num_workers,
                                seconds=args.seconds, seed=args.seed, batch_size=args.batch_size)
    batches = "" if result["batch_size"] == args.num_envs else f", batches of {result['batch_size']}"
    _say(args, f"{args.env}: {result['agent_steps_per_s']:,.0f} agent-steps/s ({args.backend}, "
               f"{args.num_envs} envs{batches})")
    return {"command": "bench", "ok": True, "env": args.env, **result}


def cmd_plot(args: argparse.Namespace) -> dict[str, Any]:
    from shoal.train.runs.plot import plot_run

    path = plot_run(args.run_dir, args.out)
    _say(args, f"wrote {path}")
    return {"command": "plot", "ok": True, "png": str(path)}


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from shoal import envs
    from shoal.train.runs.resolve import list_envs

    found = list_envs()
    if not args.json:
        lines = ["Built-in envs:"]
        lines += [
            f"  {entry.name:<14} {entry.api:<10} {entry.description}" for entry in envs.REGISTRY.values()
        ]
        gym_ids = found["gymnasium"]
        shown = gym_ids if args.all else [i for i in gym_ids if "/" not in i][:12]
        lines.append(
            f"Gymnasium ids ({len(gym_ids)}{'' if args.all else ', a few shown; --all lists every one'}):"
        )
        lines += [f"  {name}" for name in shown]
        lines.append(f"PettingZoo modules ({len(found['pettingzoo'])}):")
        lines += [f"  {name}" for name in found["pettingzoo"]]
        lines.append("Also 'module:EnvId' (Gymnasium's convention, e.g. ale_py:ALE/Pong-v5) and any 'module:attribute' "
                     "returning a Gymnasium or PettingZoo env.")
        sys.stdout.write("\n".join(lines) + "\n")
    return {
        "command": "list",
        "ok": True,
        "builtin": envs.names(),
        "gymnasium": found["gymnasium"],
        "pettingzoo": found["pettingzoo"],
    }


# ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(
        prog="shoal", description="Train and evaluate RL policies on any Gymnasium or PettingZoo env.", epilog=_EPILOG
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a policy (PPO; --algo mappo, sac, or offline bc, iql)",
        description="Train a policy with PPO, or the --algo given (offline ones learn from --dataset). "
        "ENV is a Gymnasium id (module:EnvId imports module first), a PettingZoo module path, module:attribute or a "
        "built-in env (shoal list).",
    )
    train.command = "train"  # type: ignore[attr-defined]
    train.add_argument("env", metavar="ENV")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its newest readable checkpoint (unreadable ones are skipped "
        "with a warning). Exactly as an uninterrupted run on the serial backend when the checkpoint's env "
        "snapshot is signed with this user's key (~/.cache/shoal/checkpoint.key, or $SHOAL_HOME/checkpoint.key); "
        "a snapshot from another machine or user is never unpickled, and the envs restart from a fresh reset, "
        "as they do from the checkpoint that Ctrl-C or SIGTERM saves. The run's own settings are kept; "
        "--total-steps may change, and then sets the new budget: the learning-rate decay (and prioritized-sampling "
        "beta) are recomputed over it, so the learning rate jumps at the resume point (a warning gives both "
        "budgets and rates; omit --total-steps to keep the original schedule)",
    )
    train.add_argument("--no-dashboard", action="store_true", help="no live dashboard on stderr")
    train.add_argument("--json", action="store_true", help="print only the final JSON line")
    _add_config_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser(
        "eval",
        help="evaluate a run or checkpoint",
        description="Report the mean episode return of a trained policy.",
    )
    evaluate.command = "eval"  # type: ignore[attr-defined]
    evaluate.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=None, help="seed of the evaluation envs")
    evaluate.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of taking the mode"
    )
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--env",
        default=None,
        metavar="ENV",
        help="evaluate on this env instead of the run's (same observation and action spaces; a warning names "
        "both envs)",
    )
    evaluate.add_argument(
        "--env-kwargs",
        type=_parse_dict,
        default=None,
        metavar="JSON",
        help="keyword arguments of the env (default: the run's, for the run's env), e.g. "
        "'{\"max_episode_steps\": 500}'",
    )
    evaluate.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="bound on the steps of each evaluation env (default: 100000): an env without a time limit can loop "
        "forever under deterministic actions",
    )
    evaluate.add_argument(
        "--opponent",
        default=None,
        metavar="RUN_DIR|CHECKPOINT|random|heuristic|solver|alphabeta[@DEPTH]",
        help="play games against this opponent (seats alternate) and report win/draw/loss rates with 95%% "
        "confidence intervals; --episodes is the number of games. solver: exact tic-tac-toe play; "
        "alphabeta[@DEPTH]: connect-four alpha-beta search of DEPTH plies (default 4)",
    )
    evaluate.add_argument("--video", default=None, metavar="FILE",
                          help="record the episodes (one env, in turn) into FILE: an mp4, or a gif when FILE ends in "
                          '.gif or ffmpeg is missing; needs pip install "shoal[video]"')
    evaluate.add_argument("--render", action="store_true", help="show the episodes in a window (needs a display)")
    evaluate.add_argument("--fps", type=float, default=30.0, help="frames per second of --video (default: 30)")
    evaluate.add_argument("--target-return", type=float, default=None, metavar="RETURN",
                          help="the return a Decision Transformer conditions every episode on (default: the best "
                          "episode return of its training data, saved with it)")
    evaluate.add_argument("--json", action="store_true", help="print only the final JSON line")
    evaluate.set_defaults(handler=cmd_eval)

    record = sub.add_parser(
        "record",
        help="record an offline dataset (Minari format)",
        description="Roll out RUN_OR_SOURCE and write every decision as per-slot episodes into a Minari dataset "
        "directory (readable by minari.MinariDataset(OUT/data) and shoal.datasets.load_dataset). RUN_OR_SOURCE is "
        "a run directory or checkpoint (its policy samples its actions unless --deterministic), random (uniform "
        "legal actions), or a scripted player of the classic games: heuristic, solver (tic-tac-toe), "
        "alphabeta[@DEPTH] (connect four). A step is a decision of one agent slot; rewards a slot receives while "
        "it waits for its turn land on its last move; episodes still running after --steps end truncated.",
    )
    record.command = "record"  # type: ignore[attr-defined]
    record.add_argument("source", metavar="RUN_OR_SOURCE")
    record.add_argument("--steps", type=int, required=True, help="decisions (agent steps) to record")
    record.add_argument("--out", required=True, metavar="PATH", help="the dataset directory to create")
    record.add_argument("--env", default=None, metavar="ENV",
                        help="the env to play: required for random and scripted sources; a run's own env by default")
    record.add_argument("--env-kwargs", type=_parse_dict, default=None, metavar="JSON",
                        help="keyword arguments of the env (default: the run's, for the run's env)")
    record.add_argument("--epsilon", type=float, default=0.0,
                        help="probability that a decision is replaced by a uniformly random legal action (default 0)")
    record.add_argument("--deterministic", action="store_true",
                        help="a run's policy takes its most likely action instead of sampling")
    record.add_argument("--seed", type=int, default=0, help="seed of the envs and of every random choice")
    record.add_argument("--num-envs", type=int, default=1, help="envs played side by side (default 1)")
    record.add_argument("--device", default="cpu")
    record.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")
    record.add_argument("--json", action="store_true", help="print only the final JSON line")
    record.set_defaults(handler=cmd_record)

    league = sub.add_parser(
        "league",
        help="print the league table of a self-play run",
        description="Print the ELO league table of a run trained with --league (ratings, games, W/D/L against "
        "each opponent).",
    )
    league.command = "league"  # type: ignore[attr-defined]
    league.add_argument("run_dir", metavar="RUN_DIR")
    league.add_argument("--plot", action="store_true", help="also write a PNG of the ratings over time")
    league.add_argument("--out", default=None, help="PNG path (default RUN_DIR/league.png)")
    league.add_argument("--json", action="store_true", help="print only the final JSON line")
    league.set_defaults(handler=cmd_league)

    plot = sub.add_parser(
        "plot",
        help="plot the learning curves of a run",
        description="Write a PNG of every logged scalar of a run.",
    )
    plot.command = "plot"  # type: ignore[attr-defined]
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    plot.add_argument("--json", action="store_true", help="print only the final JSON line")
    plot.set_defaults(handler=cmd_plot)

    bench = sub.add_parser("bench", help="measure an env's throughput under a vector backend",
                           description="Step copies of ENV with random legal actions and print agent-steps/s.")
    bench.command = "bench"  # type: ignore[attr-defined]
    bench.add_argument("env", metavar="ENV", help="Gymnasium id, PettingZoo module path or built-in env name")
    bench.add_argument("--num-envs", type=int, default=8)
    bench.add_argument("--backend", default="serial", choices=["serial", "multiprocessing", "ray"])
    bench.add_argument("--num-workers", type=int, default=None)
    bench.add_argument("--seconds", type=float, default=3.0)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--batch-size", type=int, default=None,
                       help="envs per batch; fewer than --num-envs steps EnvPool-style (whichever workers finish "
                            "first)")
    bench.add_argument("--json", action="store_true", help="print only the final JSON line")
    bench.set_defaults(handler=cmd_bench)

    listing = sub.add_parser("list", help="list the envs shoal can train on")
    listing.command = "list"  # type: ignore[attr-defined]
    listing.add_argument("--all", action="store_true", help="list every Gymnasium id")
    listing.add_argument("--json", action="store_true", help="print only the final JSON line")
    listing.set_defaults(handler=cmd_list)
    for command in sub.choices.values():
        command.epilog = _EPILOG
    return parser


def _unexpected(command: str, exc: BaseException) -> NoReturn:
    """An exception nobody anticipated: its traceback on stderr, then the usual error line and JSON line."""
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    _fail(command, f"{type(exc).__name__}: {exc}", code=EXIT_UNEXPECTED, error_type=type(exc).__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring: 0 success, 1 interrupted, 2 bad
    input or data, 3 unexpected error). Every status but 0 comes with an ``"ok": false`` JSON line."""
    command = "shoal"
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            command = args.command
            logging.basicConfig(
                level=logging.ERROR if args.json else logging.WARNING,
                stream=sys.stderr,
                format="shoal: %(levelname)s: %(message)s",
            )
            with terminate_as_interrupt():  # SIGTERM ends a command as Ctrl-C does: status 1 and a JSON line
                payload = args.handler(args)
        except (ShoalError, FileNotFoundError) as exc:
            _fail(command, str(exc), code=EXIT_ERROR)
        except KeyboardInterrupt as exc:
            how = "interrupted" if signal_name(exc) == "SIGINT" else f"stopped by {signal_name(exc)}"
            _fail(command, how, code=EXIT_INTERRUPTED, signal=signal_name(exc))
        except (_Exit, SystemExit):
            raise
        except Exception as exc:
            _unexpected(command, exc)
        _emit(payload)
        return EXIT_OK
    except _Exit as exc:
        return exc.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
