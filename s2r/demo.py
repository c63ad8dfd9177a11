"""``s2r demo``: the whole sim-to-real story on the embedded default robot, the emulated claw.

Stages (each shows a progress bar; every number in the report comes from this run):

1. **train** CrossQ (``s2r train``'s default learner) in MuJoCo under ``randomization/configs/dclaw.yaml`` until an
   evaluation reaches ``learn_until`` success (at most ``learn_steps``), then for ``harden_steps`` more (resumed)
   with ``dclaw_contacts.yaml``'s hard friction added: learned from the start, it slows learning too much; never
   learned, the policy's retracting fingers drag the valve back where friction grips (the PyBullet reality);
2. **export** the deterministic actor of the run's end (:data:`DEPLOYED`) to ONNX (verified against PyTorch);
3. **deploy** it on the emulated robot, whose reality (``hardware_configs/reality/dclaw_pybullet_gap.yaml``:
   PyBullet physics, perturbed parameters, latency, sensor noise) is not the training simulator;
4. **adapt** the source distribution's physical parameters (``s2r adapt``) to up to five episodes of
   ``scripted:excite`` run on the robot for the purpose (per-joint multi-sines: system identification needs
   motions that excite the servos and turn the valve, which a half-trained policy's episodes need not do);
5. **retrain**: continue the run under the posterior (with the hard friction), then export and deploy again. A
   parameter the adaptation flags as pressed against the prior's edge (:func:`randomization.adapt.prior_edges`: not
   an identification) keeps its prior for the retraining. The retrained policy goes into service only when it beats
   the first one on the robot, by fine-tuning's test (:mod:`policies.gate`), with a second look of 20 more episodes
   each while it is ahead without passing (:func:`robot_test`): a posterior fitted through another engine's physics
   can be confidently wrong, and the robot has the last word;
6. **fine-tune** on the emulated robot (``s2r finetune``) from the policy in service, then deploy the policy
   fine-tuning hands out: the incumbent, which a candidate replaces only when it measures better.

Then a robustness sweep of the retrained policy in simulation, a rollout GIF, ``DIR/report.md`` (the table,
the plots, the seed and the budget) and ``DIR/demo.json``, in ``--out DIR``. ``--quick`` runs the same stages on
tiny budgets (a smoke test of the pipeline; its numbers mean nothing).

The robot stages (deployments, excitation, fine-tuning) run on the emulator with the shipped reality by
default; ``--reality FILE`` gives the emulator another one, and ``--driver dynamixel --robot YAML [--port DEV]``
runs them on real servos. The report says which. An emulator the demo starts runs in lock-step
(``robot.emulator.lockstep``: simulated time, deterministic for a seed, faster than real time, at the config's own
latency timer); ``--no-lockstep`` runs it in real time, as a real robot runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from policies.config import config_from_mapping
from policies.envs import make_env
from policies.finetune_config import FinetuneConfig
from policies.gate import DEFAULT_CONFIDENCE, TEST_NAME, Decision, decide, per_look_confidence, worth_another_look
from randomization.adapt import AdaptConfig
from randomization.distributions import combine_distributions, load_distribution, save_distribution
from randomization.parallel import ExecutorConfig
from randomization.sweep import grid_cells, parse_grid_axis
from robot.config import load_config
from robot.emulator.reality import load_reality
from s2r import api, cliargs
from s2r.core.atomicio import write_text_atomic
from s2r.core.errors import UserError
from s2r.core.extras import require_torch
from s2r.core.resources import HARDWARE_CONFIGS, REALITY_DIR, shipped_file
from s2r.core.trajlog import episode_files
from s2r.policy_files import load_policy
from sim.render import FrameOptions, rollout_frames, write_gif

HARDWARE_CONFIG = shipped_file(HARDWARE_CONFIGS, "dclaw.yaml")
ROOT = HARDWARE_CONFIG.parents[1]
"""Where the packages are (a checkout, or site-packages): files under it are shown relative to it."""
DEMO_LATENCY_TIMER_S = 0.004
"""The demo's packet timeouts assume a 4 ms latency timer instead of the config's 1 ms (about 10 ms instead of
4 ms per missing reply): the emulated robot shares two cores with training and sweep workers, and a reply a
few milliseconds late there is the host's hiccup, not a bus fault."""
REALITY = shipped_file(HARDWARE_CONFIGS, REALITY_DIR, "dclaw_pybullet_gap.yaml")
PRIOR = shipped_file("randomization.configs", "dclaw.yaml")
CONTACTS = shipped_file("randomization.configs", "dclaw_contacts.yaml")
"""Hard friction, added to the prior for the ``harden_steps`` that end the first training and for retraining:
policies that never met it lose the valve where friction grips (the PyBullet reality)."""
TASK = "dclaw-turn"
DEPLOYED = "last.pt"
"""The checkpoint of each training run that the demo deploys and fine-tunes: the run's end, not its ``best.pt``.
Both runs end under the distribution the robot calls for (the hard friction, then the posterior too), where their
evaluations do not tell the late checkpoints apart (0.90-0.96 success over 50 episodes) but the robot does: seed 0's
``best.pt``, 4k steps into the hard friction, succeeded in 69 of 80 episodes on the emulated robot, and its
``last.pt``, 12k steps in, in 79 of 80."""
EXCITE_EPISODES_MAX = 5
"""Most ``scripted:excite`` episodes the adaptation stage runs (the budget's ``deploy_episodes`` if fewer): five
identify the claw's servo gain and damping, tip friction and valve damping (``randomization.adapt``)."""
DRIVERS = ("emulator", "dynamixel")
"""Where the demo's robot stages run: the servo emulator (default) or real Dynamixel servos."""
REPORT_NAME = "report.md"
JSON_NAME = "demo.json"


@dataclass(frozen=True)
class DemoBudget:
    """How much of each stage the demo runs."""

    algo: str
    """Learner of both training runs (``s2r train --algo``)."""
    learn_steps: int
    """Most environment steps of the first training run under the prior alone."""
    learn_until: float
    """Success at which one of training's evaluations (50 episodes drawn from the prior, seeded the same every
    time) ends that part early (``s2r train``'s ``stop_success``)."""
    harden_steps: int
    """Environment steps after it under the prior plus :data:`CONTACTS` (resumed from the first part)."""
    retrain_steps: int
    """Further steps under the adapted distribution."""
    hidden: tuple[int, ...]
    """Hidden layer widths of actor and critics."""
    threads: int
    """torch intra-op threads of both training runs (``s2r train``'s ``threads``)."""
    batch_size: int
    """Minibatch of the learner (``s2r train``'s default, CrossQ)."""
    warmup_steps: int
    """Random-action steps before learning."""
    epopt_eps: float | None
    """EPOpt: fraction of probed models kept; ``None`` trains under plain per-episode randomization."""
    epopt_models: int
    """EPOpt: models probed per iteration."""
    epopt_warmup: int
    """EPOpt: iterations with epsilon = 1."""
    eval_episodes: int
    """Simulation episodes per evaluation (training's and the table's)."""
    eval_interval: int
    """Environment steps between training's evaluations: how soon the first part sees ``learn_until``."""
    deploy_episodes: int
    """Episodes of each deployment on the emulated robot."""
    gate_looks: int
    """Most looks of the robot's test of the retrained policy against the first (:func:`robot_test`): each look
    after the first deploys both policies for ``deploy_episodes`` more episodes."""
    adapt_iterations: int
    """Importance-sampling rounds of the adaptation."""
    adapt_samples: int
    """Parameter samples per round."""
    finetune_episodes: int
    """Episodes of fine-tuning on the emulated robot, of every kind: with ``s2r finetune``'s default schedule the
    first 10 measure the incumbent, and each later 14 (4 exploring, 10 measuring the candidate) decide a round."""
    sweep_grid: tuple[str, ...]
    """Robustness sweep axes (``NAME=LO:HI:N``)."""
    sweep_episodes: int
    """Episodes per sweep cell."""


FULL = DemoBudget(
    # CrossQ learns the claw under this randomization to >= 0.9 nominal success by 12.5-15k steps in
    # benchmarks/sample_efficiency.py (seeds 0-2; plain SAC needs about 80k), but a run's path varies with the seed
    # and the CPU: the demo's seeds reached 0.9 at 16.8k and 21.6k on one host, and seed 2 had barely started at 24k
    # (0.04). So the first part stops at its first evaluation of 0.9 rather than at a fixed step, with 30k as the
    # cap: a fast path gets its hardening early, a slow one gets more time to learn. The demo trains with plain
    # randomization, the setting that was measured: EPOpt's hard-model focus is off (epopt_eps=None). Then 12k steps
    # add hard friction (CONTACTS): resumed from one-thread 30k runs, 12k steps took PyBullet success at the
    # reality's parameters from 0.375 to 0.825 (seed 1) and from 0.85 to 1.00 (seed 2), and seed 2 on the emulated
    # robot from 30/40 to 40/40 (seed 1: 33/40, then 31/40); from scratch under it the claw learned too slowly (0.42
    # and 0.66 at 30k). Retraining gets 8k more steps under the posterior (plus CONTACTS). Two torch threads train
    # at most 42k + 8k steps in about 11 minutes on a 2-core host.
    algo="crossq", learn_steps=30_000, learn_until=0.9, harden_steps=12_000, retrain_steps=8_000,
    hidden=(256, 256), threads=2, batch_size=256, warmup_steps=1_000,
    epopt_eps=None, epopt_models=10, epopt_warmup=0, eval_episodes=50, eval_interval=2_000, deploy_episodes=20,
    gate_looks=2,
    adapt_iterations=12, adapt_samples=60, finetune_episodes=24,
    sweep_grid=("valve_damping=0.01:0.25:5", "finger_kp=2:6:5"), sweep_episodes=2,
)
QUICK = DemoBudget(
    # One torch thread: a 32-wide network's update is too small to share, and on a busy 2-core host two threads
    # made each update about 5x slower (the quick training took 104 s against 20 s with one thread).
    algo="crossq", learn_steps=800, learn_until=0.9, harden_steps=400, retrain_steps=300, hidden=(32, 32),
    threads=1, batch_size=64, warmup_steps=400,
    epopt_eps=0.5, epopt_models=2, epopt_warmup=1, eval_episodes=2, eval_interval=400, deploy_episodes=2,
    gate_looks=2,
    adapt_iterations=1, adapt_samples=8, finetune_episodes=1,
    sweep_grid=("valve_damping=0.01:0.25:2", "finger_kp=2:6:2"), sweep_episodes=1,
)


@dataclass
class Row:
    """One line of the results table."""

    stage: str
    where: str
    success_rate: float | None
    return_mean: float | None
    episodes: int
    note: str = ""
    """Why a deployment ended early (its safety stop), or empty."""


@dataclass(frozen=True)
class DemoRobot:
    """The robot the demo's robot stages run on."""

    config: Path
    """Hardware config as given (default ``hardware_configs/dclaw.yaml``)."""
    driver: str
    """``emulator`` or ``dynamixel``."""
    port: str | None = None
    """Serial device instead of the config's (or the pty of a running ``s2r emulate``)."""
    reality: Path | None = None
    """Reality file of the emulator the demo starts; ``None`` on real servos or a running ``s2r emulate``."""
    lockstep: bool = False
    """Whether the emulator the demo starts runs in simulated time (``s2r deploy --lockstep``)."""

    def to_json(self) -> dict[str, Any]:
        return {"config": str(self.config), "driver": self.driver, "port": self.port,
                "reality": None if self.reality is None else str(self.reality), "lockstep": self.lockstep}


def demo_target(robot: Path | None, driver: str, port: str | None, reality: Path | None,
                lockstep: bool | None = None) -> DemoRobot:
    """The validated robot of ``s2r demo``'s flags; every problem is a ``UserError`` before anything runs.
    ``lockstep`` ``None`` means lock-step wherever the demo starts the emulator itself."""
    if driver not in DRIVERS:
        raise UserError(f"--driver {driver!r}: expected one of {', '.join(DRIVERS)}")
    config_path = robot or HARDWARE_CONFIG
    if not config_path.is_file():
        raise UserError(f"--robot {str(config_path)!r}: no such file; expected a hardware config YAML such as "
                        f"{rel_root(HARDWARE_CONFIG)}")
    config = load_config(config_path)
    task = config.task_spec().name
    if task != TASK:
        raise UserError(f"--robot {str(config_path)!r} is a {config.robot} for task {task!r}; the demo trains, "
                        f"adapts and fine-tunes the claw's {TASK!r}")
    if lockstep and (driver != "emulator" or port is not None):
        raise UserError("--lockstep runs an emulator the demo starts in simulated time: it needs --driver emulator "
                        "and no --port")
    if driver == "dynamixel":
        if reality is not None:
            raise UserError("--reality describes the emulated robot; it does not apply with --driver dynamixel")
        return DemoRobot(config_path, driver, port, None)
    if port is not None:
        # An emulator on a port is a running `s2r emulate`, which was given its reality when it started.
        if reality is not None:
            raise UserError("--reality applies to the emulator the demo starts; with --port the running "
                            "`s2r emulate` has its own reality")
        return DemoRobot(config_path, driver, port, None)
    reality_path = reality or REALITY
    if not reality_path.is_file():
        raise UserError(f"--reality {str(reality_path)!r}: no such file; expected a reality YAML such as "
                        f"{rel_root(REALITY)}")
    load_reality(reality_path, config)  # refuses a bad file now, not after twenty minutes of training
    return DemoRobot(config_path, driver, port, reality_path, lockstep=lockstep is not False)


class Stages:
    """Progress output: one bar per stage on stderr (or nothing with ``quiet``)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.times: dict[str, float] = {}

    def bar(self, name: str, total: int, unit: str) -> Any:
        return tqdm(total=total, desc=f"{name:>10}", unit=unit, file=sys.stderr, disable=self.quiet,
                    dynamic_ncols=True, leave=True)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a stage without inner progress as a one-step bar."""
        t0 = time.perf_counter()
        with self.bar(name, 1, "stage") as bar:
            out = fn()
            bar.update(1)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
        return out

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
        return out


def _train_fields(budget: DemoBudget, seed: int, randomize: dict[str, Any], steps: int) -> dict[str, Any]:
    return {"task": TASK, "algo": budget.algo, "steps": steps, "seed": seed, "randomize": randomize,
            "hidden": list(budget.hidden), "threads": budget.threads,
            "batch_size": budget.batch_size, "warmup_steps": budget.warmup_steps, "epopt_eps": budget.epopt_eps,
            "epopt_models": budget.epopt_models, "epopt_warmup": budget.epopt_warmup,
            "eval_episodes": budget.eval_episodes, "eval_interval": budget.eval_interval}


def _train(stages: Stages, name: str, fields: dict[str, Any], out: Path, resume: bool) -> api.TrainResult:
    if not stages.quiet:
        until = f", or until an evaluation's success is {fields['stop_success']:g}" if "stop_success" in fields else ""
        print(f"{name:>10}: {fields['steps']} steps of {fields['algo']}{until} "
              f"({'continued' if resume else 'from scratch'})",
              file=sys.stderr)
    result: api.TrainResult = stages.timed(name, lambda: api.train(config_from_mapping(fields), out, resume=resume,
                                                                    progress=not stages.quiet))
    return result


def _export(stages: Stages, run: Path, out: Path, seed: int) -> Path:
    stages.run("export", lambda: api.export(api.ExportJob(run, out, api.ExportConfig(seed=seed))))
    return out


def _sim_eval(stages: Stages, policy: Path, episodes: int, seed: int) -> dict[str, Any]:
    result: api.EvalResult = stages.run("sim eval", lambda: api.evaluate(api.EvalJob(policy, episodes, seed,
                                                                                    "mujoco")))
    return asdict(result.evaluation)


def demo_robot(out: Path, target: DemoRobot) -> Path:
    """The hardware config the robot stages use: on the emulator ``DIR/robot.yaml``, the config with the demo's
    latency timer (see DEMO_LATENCY_TIMER_S); real servos, and a lock-step emulator (no host to be late), get their
    config unchanged."""
    if target.driver != "emulator" or target.lockstep:
        return target.config
    source = target.config
    text = source.read_text()
    text, n = re.subn(r"^latency_timer_s:.*$", f"latency_timer_s: {DEMO_LATENCY_TIMER_S}  # s2r demo: a shared CPU",
                      text, flags=re.MULTILINE)
    if n != 1:
        raise UserError(f"{source} has no single latency_timer_s line to adjust")
    path = out / "robot.yaml"
    write_text_atomic(path, f"# {source.name} as s2r demo runs it (only latency_timer_s differs)\n" + text)
    return path


def deploy(stages: Stages, name: str, policy: Path | str, episodes: int, log_dir: Path, seed: int,
           robot: Path, target: DemoRobot) -> dict[str, Any]:
    """``episodes`` episodes of ``policy`` (an ONNX file or a scripted policy) on ``target``: a fresh emulated
    robot with its reality, or the real servos.

    Each deployment is ``s2r deploy`` in a process of its own, as a user runs it: the real-time loop then shares
    nothing with this process, which has just trained (in-process deployments after training saw stalls of
    hundreds of milliseconds that the watchdog rightly stopped; a fresh process ran the same policy cleanly).
    The bar follows the episode files as they are written.
    """
    cmd = [sys.executable, "-m", "s2r.cli", "deploy", str(policy), "--robot", str(robot), "--driver", target.driver,
           "--episodes", str(episodes), "--log-dir", str(log_dir), "--seed", str(seed), "--json"]
    if target.reality is not None:
        cmd += ["--reality", str(target.reality)]
    if target.port is not None:
        cmd += ["--port", target.port]
    if target.lockstep:
        cmd.append("--lockstep")
    t0 = time.perf_counter()
    with stages.bar(name, episodes, "ep") as bar, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None:
            time.sleep(0.5)
            done = len(episode_files(log_dir)) if log_dir.is_dir() else 0
            bar.update(done - bar.n)
        out, err = proc.communicate()
        if log_dir.is_dir():
            bar.update(len(episode_files(log_dir)) - bar.n)
    stages.times[name] = stages.times.get(name, 0.0) + time.perf_counter() - t0
    lines = out.strip().splitlines()
    if proc.returncode not in (0, 3) or not lines:
        raise UserError(f"s2r deploy failed (exit {proc.returncode}): {err.strip()[-500:]}")
    result = json.loads(lines[-1])
    return {"episodes": result["episodes"], "success_rate": result["success_rate"],
            "return_mean": result["return_mean"], "loop": result["loop"],
            "stop": None if result["stop_kind"] == "completed" else f"{result['stop_kind']}: {result['stop_reason']}",
            "log_dir": str(log_dir)}


def _adapt(stages: Stages, budget: DemoBudget, logs: Path, out: Path, seed: int) -> dict[str, Any]:
    config = AdaptConfig(iterations=budget.adapt_iterations, samples=budget.adapt_samples, seed=seed)
    job = api.AdaptJob(TASK, PRIOR, logs, out, engine="mujoco", config=config, executor=ExecutorConfig(workers=2))
    run: api.AdaptRun = stages.run("adapt", lambda: api.adapt(job))
    result, paths = run.result, (run.yaml, run.json, run.png)
    moments = {n: {"prior": list(result.prior_moments[n]), "posterior": list(result.posterior_moments[n]),
                   "informed": n in result.names} for n in (*result.names, *result.passed_through)}
    return {"posterior": str(paths[0]), "report": str(paths[1]), "plot": str(paths[2]), "moments": moments,
            "episodes": result.episodes, "transitions": result.transitions, "at_prior_edge": result.prior_edges,
            "warning": run.warning}


def _finetune(stages: Stages, budget: DemoBudget, run: Path, out: Path, seed: int, robot: Path,
              target: DemoRobot) -> dict[str, Any]:
    cfg = FinetuneConfig(run_dir=run, robot=robot, driver=target.driver, port=target.port, reality=target.reality,
                         lockstep=target.lockstep, episodes=budget.finetune_episodes, out=out, seed=seed)
    summary = stages.timed("finetune", lambda: api.finetune(cfg, progress=not stages.quiet))
    if summary.policy is None:
        raise UserError(f"fine-tuning wrote no policy ({summary.stop_kind}: {summary.stop_reason})")
    return dict(summary.to_json())


def _sweep(stages: Stages, budget: DemoBudget, policy: Path, out: Path) -> dict[str, Any]:
    cells = len(grid_cells([parse_grid_axis(g) for g in budget.sweep_grid]))
    t0 = time.perf_counter()
    job = api.SweepJob(policy, budget.sweep_grid, budget.sweep_episodes, out=out, seed=1000,
                       executor=ExecutorConfig(workers=2))
    with stages.bar("sweep", cells, "cell") as bar:
        run = api.sweep(job, progress=lambda _line: bar.update(1))
    stages.times["sweep"] = time.perf_counter() - t0
    return {**dict(run.result.summary), "json": str(run.json), "heatmap": str(run.png)}


def _gif(stages: Stages, policy: Path, out: Path, seed: int) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        env = make_env("s2r/DClawTurnFixed-v0", "mujoco", {"render_mode": "rgb_array"})
        try:
            # The top camera's view in the corner: what a policy reading the valve from the camera would see.
            rollout = rollout_frames(env, load_policy(policy).act, episodes=1, seed=seed,
                                     options=FrameOptions(inset="top"))
        finally:
            env.close()
        write_gif(rollout.frames, out, rollout.frame_period)
        return {"gif": str(out), "success": rollout.successes[0], "return": rollout.returns[0]}

    return dict(stages.run("gif", run))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = ["| stage | where | success | return | episodes | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.stage} | {r.where} | {_fmt(r.success_rate)} | {_fmt(r.return_mean, 1)} | {r.episodes} | "
                     f"{r.note} |")
    return "\n".join(lines)


def _deployment_note(deployment: dict[str, Any]) -> str:
    stop = deployment.get("stop")
    looks = deployment.get("looks")
    return _join("" if not looks else f"{' + '.join(str(d['episodes']) for d in looks)} episodes in "
                 f"{len(looks)} looks of the robot's test", "" if not stop else f"stopped early: {stop}")


def count_successes(deployment: dict[str, Any]) -> int:
    """Successful episodes of a deployment (its rate times its completed episodes)."""
    rate = deployment["success_rate"]
    return 0 if rate is None else round(rate * deployment["episodes"])


def retrained_serves(first: dict[str, Any], adapted: dict[str, Any],
                     confidence: float = DEFAULT_CONFIDENCE) -> Decision:
    """Whether the retrained policy replaces the first one in service: fine-tuning's rule (:func:`policies.gate.decide`
    at ``confidence``) on the two deployments' robot episodes."""
    return decide(0, count_successes(adapted), adapted["episodes"], "first deployment", count_successes(first),
                  first["episodes"], confidence)


def merge_deployments(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Two deployments of one policy as one: episodes and successes add up, the return is the episode-weighted
    mean, and ``looks`` keeps each deployment as it ran."""
    looks = [*earlier.get("looks", [earlier]), later]
    episodes = sum(d["episodes"] for d in looks)
    successes = sum(count_successes(d) for d in looks)
    returns = [(d["return_mean"], d["episodes"]) for d in looks if d["return_mean"] is not None and d["episodes"]]
    return {"episodes": episodes, "success_rate": successes / episodes if episodes else None,
            "return_mean": sum(r * n for r, n in returns) / sum(n for _, n in returns) if returns else None,
            "loop": later["loop"], "stop": _join(*(d["stop"] or "" for d in looks)) or None,
            "log_dir": earlier["log_dir"], "looks": looks}


LookRunner = Callable[[int], tuple[dict[str, Any], dict[str, Any]]]
"""Runs look ``n`` (2, 3, ...) of the robot's test: more episodes of the first and of the retrained policy."""


def robot_test(first: dict[str, Any], adapted: dict[str, Any], looks: int,
               look_again: LookRunner) -> tuple[Decision, dict[str, Any], dict[str, Any]]:
    """Whether the retrained policy replaces the first, and both deployments with every episode the test ran.

    Twenty episodes each cannot tell 17/20 from 20/20 (one-sided Fisher p = 0.12), so the test may look again:
    while the retrained policy is ahead without passing, ``look_again`` deploys both once more, up to ``looks``
    looks. Each look tests all episodes so far at :func:`policies.gate.per_look_confidence`, so a retrained policy
    that is no better replaces the first with probability at most 5 % over all looks."""
    confidence = per_look_confidence(DEFAULT_CONFIDENCE, looks)
    decision = retrained_serves(first, adapted, confidence)
    for look in range(2, looks + 1):
        if not worth_another_look(decision):
            break
        more_first, more_adapted = look_again(look)
        first, adapted = merge_deployments(first, more_first), merge_deployments(adapted, more_adapted)
        decision = retrained_serves(first, adapted, confidence)
    return decision, first, adapted


def _service_note(decision: Decision) -> str:
    verb = "replaces" if decision.replaced else "does not replace"
    return (f"{verb} the first policy in service ({decision.candidate_successes}/{decision.candidate_episodes} vs "
            f"{decision.incumbent_successes}/{decision.incumbent_episodes}, one-sided Fisher p = "
            f"{decision.p_value:.2g} against {1 - decision.confidence:.3g} per look)")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _verdict(first: float | None, final: float | None) -> str:
    if first is None or final is None:
        return "A deployment did not complete, so the before/after comparison is missing (see demo.json)."
    if final >= first:
        return (f"The final reality success ({final:.2f}) is at least the first deployment's ({first:.2f}).")
    return (f"The final reality success ({final:.2f}) is below the first deployment's ({first:.2f}). With "
            "this seed and budget the adaptation and fine-tuning did not close the gap; the reality file was "
            "not changed to hide it. Larger budgets (more fine-tuning episodes, a longer retraining) are the "
            "first things to try.")


def write_report(out: Path, data: dict[str, Any], rows: list[Row]) -> Path:
    """``report.md`` from the run's data (atomically)."""
    def rel(p: str) -> str:
        return str(Path(p).resolve().relative_to(out.resolve()))

    loop = data["deploy"]["finetuned"]["loop"]
    adapt = data["adapt"]["moments"]
    lines = [
        "# s2r demo report",
        "",
        f"Seed {data['seed']}, {'quick' if data['quick'] else 'full'} budget, {data['wall_time_s']:.0f} s on "
        f"{data['host']['cpu_count']} CPU(s). {robot_sentence(data['robot'])}",
        "Every number below was measured by this run.",
        "",
        table(rows),
        "",
        f"Control loop on the {data['robot']['where']} (last deployment): cycle time p50 "
        f"{_fmt(loop.get('cycle_time_p50_us'), 0)} us, p99 {_fmt(loop.get('cycle_time_p99_us'), 0)} us; "
        "period error p99 "
        f"{_fmt(loop.get('period_error_p99_us'), 0)} us; overruns {loop.get('overruns')}.",
        "",
        _verdict(data["deploy"]["first"]["success_rate"], data["deploy"]["finetuned"]["success_rate"]),
        "",
        "## Adaptation (prior → posterior, mean ± std)",
        "",
        f"From {data['adapt']['episodes']} episode(s) of {_logs_from(data['adapt']['logs_from'])} "
        f"({data['adapt']['transitions']} transitions) on the {data['robot']['where']}"
        f"{_excite_note(data['adapt']['excite'])}; the parameters five excitation episodes identify are named in "
        "`randomization/adapt.py`.",
        "",
        "| parameter | prior | posterior | informed by the logs |",
        "|---|---|---|---|",
        *[f"| {n} | {m['prior'][0]:.4g} ± {m['prior'][1]:.3g} | {m['posterior'][0]:.4g} ± {m['posterior'][1]:.3g} | "
          f"{'yes' if m['informed'] else 'no (prior kept)'} |" for n, m in adapt.items()],
        "",
        *([f"**Not an identification:** {data['adapt']['warning']} Retraining kept the prior for "
           f"{', '.join(data['adapt']['prior_kept_for'])}; the robot's test decides whether the retrained policy "
           "serves.", ""] if data["adapt"].get("warning") else []),
        f"![prior vs posterior]({rel(data['adapt']['plot'])})",
        "",
        "## Learning curves",
        "",
        f"![first training]({rel(data['train']['curve'])})",
        "",
        f"![retraining under the posterior]({rel(data['retrain']['curve'])})",
        "",
        "## Robustness of the retrained policy in simulation",
        "",
        f"Mean success over {data['sweep']['cells']} cells {data['sweep']['mean_success']:.2f}, worst 10 % of cells "
        f"{data['sweep']['worst10_success']:.2f}.",
        "",
        f"![robustness heatmap]({rel(data['sweep']['heatmap'])})",
        "",
        "## A rollout of the fine-tuned policy (MuJoCo)",
        "",
        "The top-left corner shows the task camera `top` (84 x 84): what a policy reading the valve from the camera "
        "sees (`s2r deploy --perception`).",
        "",
        f"![rollout]({rel(data['gif']['gif'])})",
        "",
        "## Budget and stage times",
        "",
        "```",
        json.dumps(data["budget"], indent=1),
        "```",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.0f} |" for k, v in data["stage_times_s"].items()],
        "",
    ]
    path = out / REPORT_NAME
    write_text_atomic(path, "\n".join(lines))
    return path


def _logs_from(source: str) -> str:
    return f"`{source}`" if source.startswith("scripted:") else source


def _excite_note(excite: dict[str, Any]) -> str:
    return f" (the excitation run ended early: {excite['stop']})" if excite.get("stop") else ""


def robot_sentence(robot: dict[str, Any]) -> str:
    """The report's sentence on which robot, driver and reality ran (``robot`` as in ``demo.json``)."""
    config = rel_root(Path(robot["config"]))
    if robot["driver"] == "emulator" and robot["reality"] is None:
        return (f"Robot: `{config}` (with a {DEMO_LATENCY_TIMER_S * 1e3:g} ms latency timer for a shared CPU) on "
                f"the running servo emulator at `{robot['port']}` (its reality was set when it started).")
    if robot["driver"] == "emulator":
        reality = Path(robot["reality"])
        shipped = " (PyBullet physics and perturbed parameters: not the MuJoCo training simulator)" \
            if reality.resolve() == REALITY.resolve() else ""
        if robot.get("lockstep"):
            return (f"Robot: `{config}` on the servo emulator in lock-step (simulated time) with the reality "
                    f"`{rel_root(reality)}`{shipped}.")
        return (f"Robot: `{config}` (with a {DEMO_LATENCY_TIMER_S * 1e3:g} ms latency timer for a shared CPU) on "
                f"the servo emulator with the reality `{rel_root(reality)}`{shipped}.")
    port = f" on port `{robot['port']}`" if robot["port"] else ""
    return f"Robot: `{config}` on real Dynamixel servos{port} (driver `dynamixel`)."


def rel_root(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run_demo(out: Path, quick: bool, seed: int, quiet: bool = False, target: DemoRobot | None = None) -> dict[str, Any]:
    """Every stage into ``out`` (which must not hold an earlier demo) with the robot stages on ``target`` (default:
    the emulated claw with the shipped reality); returns the run's data."""
    require_torch("s2r demo")  # before anything is written
    budget = QUICK if quick else FULL
    stages = Stages(quiet)
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"seed": seed, "quick": quick, "budget": asdict(budget),
                            "host": {"cpu_count": os.cpu_count(), "load_average_start": list(os.getloadavg())}}
    prior = load_distribution(PRIOR, task=TASK)
    contacts = load_distribution(CONTACTS, task=TASK)
    target = target or demo_target(None, "emulator", None, None)
    robot = demo_robot(out, target)
    where = "emulated robot" if target.driver == "emulator" else "real robot"
    data["robot"] = {**target.to_json(), "where": where, "config_used": str(robot)}

    train_dir, retrain_dir = out / "train", out / "retrain"
    learned = _train(stages, "train", {**_train_fields(budget, seed, prior.to_yaml_dict(), budget.learn_steps),
                                       "stop_success": budget.learn_until}, train_dir, False)
    hardened = combine_distributions([prior, contacts]).to_yaml_dict()
    summary = _train(stages, "train", _train_fields(budget, seed, hardened, learned.steps + budget.harden_steps),
                     train_dir, True)
    data["train"] = {"run_dir": str(train_dir), "steps": summary.steps, "train_time_s": summary.train_time_s,
                     "learned_steps": learned.steps, "reached_learn_until": learned.reached_success,
                     "curve": str(train_dir / "learning_curve.png")}
    sim_policy = _export(stages, train_dir / DEPLOYED, out / "policy_sim.onnx", seed)
    sim = _sim_eval(stages, sim_policy, budget.eval_episodes, seed)
    first = deploy(stages, "deploy", sim_policy, budget.deploy_episodes, out / "deploy_first", seed, robot, target)

    # The adaptation's data: episodes run to identify the robot, not the policy's, which may barely move it.
    excite = deploy(stages, "excite", "scripted:excite", min(EXCITE_EPISODES_MAX, budget.deploy_episodes),
                    out / "excite", seed, robot, target)
    if excite["episodes"] > 0:
        logs, logs_from = out / "excite", "scripted:excite"
    else:  # stopped before its first episode ended: the policy's episodes are what there is
        logs, logs_from = out / "deploy_first", f"the first deployment (the excitation stopped: {excite['stop']})"
    adapt = _adapt(stages, budget, logs, out / "adapt" / "posterior.yaml", seed)
    adapt["excite"] = excite
    adapt["logs_from"] = logs_from
    retrain_under = load_distribution(adapt["posterior"], task=TASK)
    if adapt["at_prior_edge"]:
        # Parameters pressed against the prior's edge were not identified (the report says why): retraining
        # keeps the prior for them rather than train on a value the robot's data say is wrong.
        retrain_under = retrain_under.with_prior_for(prior, list(adapt["at_prior_edge"]))
        adapt["retrained_under"] = str(out / "adapt" / "retrain.yaml")
        save_distribution(retrain_under, adapt["retrained_under"],
                          "The posterior with the parameters at the prior's edge back on the prior.\n")
    adapt["prior_kept_for"] = sorted(adapt["at_prior_edge"])
    posterior = combine_distributions([retrain_under, contacts]).to_yaml_dict()
    shutil.copytree(train_dir, retrain_dir)
    if (retrain_dir / "tensorboard").exists():
        shutil.rmtree(retrain_dir / "tensorboard")  # its event files would mix both runs' curves
    summary = _train(stages, "retrain", _train_fields(budget, seed, posterior, summary.steps
                                                      + budget.retrain_steps), retrain_dir, True)
    data["retrain"] = {"run_dir": str(retrain_dir), "steps": summary.steps,
                       "train_time_s": summary.train_time_s, "curve": str(retrain_dir / "learning_curve.png")}
    adapted_policy = _export(stages, retrain_dir / DEPLOYED, out / "policy_adapted.onnx", seed)
    sim_adapted = _sim_eval(stages, adapted_policy, budget.eval_episodes, seed)
    adapted = deploy(stages, "deploy", adapted_policy, budget.deploy_episodes, out / "deploy_adapted", seed, robot,
                     target)

    def look_again(look: int) -> tuple[dict[str, Any], dict[str, Any]]:
        look_seed = seed + 1000 * (look - 1)  # other episode starts and goals than the first look's
        return (deploy(stages, "deploy", sim_policy, budget.deploy_episodes, out / f"deploy_first_look{look}",
                       look_seed, robot, target),
                deploy(stages, "deploy", adapted_policy, budget.deploy_episodes, out / f"deploy_adapted_look{look}",
                       look_seed, robot, target))

    stage3, first, adapted = robot_test(first, adapted, budget.gate_looks, look_again)
    serving_dir = retrain_dir if stage3.replaced else train_dir
    tuned = _finetune(stages, budget, serving_dir / DEPLOYED, out / "finetune", seed, robot, target)
    final = deploy(stages, "deploy", Path(tuned["policy"]), budget.deploy_episodes, out / "deploy_finetuned", seed,
                   robot, target)

    data["adapt"] = adapt
    data["in_service_after_retraining"] = {"policy": "retrained" if stage3.replaced else "first",
                                           "run_dir": str(serving_dir), "checkpoint": str(serving_dir / DEPLOYED),
                                           "test": TEST_NAME, **asdict(stage3)}
    data["finetune"] = {k: tuned[k] for k in ("episodes_done", "success_rate", "return_mean", "update_time_s_max",
                                             "policy", "loop")}
    data["sim"] = {"first": sim, "adapted": sim_adapted}
    data["deploy"] = {"first": first, "adapted": adapted, "finetuned": final}
    data["sweep"] = _sweep(stages, budget, adapted_policy, out / "sweep")
    data["gif"] = _gif(stages, Path(tuned["policy"]), out / "rollout.gif", seed)
    rows = [
        Row("1. trained with randomization" + (" + EPOpt" if budget.epopt_eps is not None else ""),
            "simulation (MuJoCo, nominal)", sim["success_rate"], sim["return_mean"], sim["episodes"]),
        Row("2. first deployment", where, first["success_rate"], first["return_mean"], first["episodes"],
            _deployment_note(first)),
        Row("3. after adaptation + retraining", "simulation (MuJoCo, nominal)", sim_adapted["success_rate"],
            sim_adapted["return_mean"], sim_adapted["episodes"]),
        Row("3. after adaptation + retraining", where, adapted["success_rate"], adapted["return_mean"],
            adapted["episodes"], _join(_deployment_note(adapted), _service_note(stage3))),
        Row(f"4. after fine-tuning ({tuned['episodes_done']} robot episodes)", where,
            final["success_rate"], final["return_mean"], final["episodes"], _deployment_note(final)),
    ]
    data["table"] = [asdict(r) for r in rows]
    data["stage_times_s"] = {k: round(v, 1) for k, v in stages.times.items()}
    data["wall_time_s"] = time.perf_counter() - t_start
    data["report"] = str(write_report(out, data, rows))
    write_text_atomic(out / JSON_NAME, json.dumps(data, indent=2, default=str) + "\n")
    return data


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = sub.add_parser(
        "demo",
        help="the whole sim-to-real story on the emulated claw (train, export, deploy, adapt, retrain, fine-tune)",
        description=(__doc__ or "").split("\n\n")[0] + " Writes report.md and demo.json into --out; the full run "
        "takes about 20 minutes on 2 cores, --quick about 2.",
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, numbers mean nothing")
    p.add_argument("--out", type=Path, metavar="DIR", help="directory to write the demo into: report.md, demo.json, "
                   "its runs, policies and logs (default: runs/demo, quick: runs/demo-quick)")
    p.add_argument("--seed", type=cliargs.seed, default=0, help="seed of training, evaluation, the robot episodes, "
                   "the adaptation and fine-tuning")
    p.add_argument("--force", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--reality", type=Path, metavar="FILE",
                   help=f"reality file of the emulated robot (default: {rel_root(REALITY)}); see "
                   "robot/emulator/reality.py for the format")
    p.add_argument("--driver", choices=DRIVERS, default="emulator",
                   help="where the robot stages (deployments, excitation, fine-tuning) run: the servo emulator "
                   "(default) or real Dynamixel servos")
    p.add_argument("--robot", type=Path, metavar="YAML",
                   help=f"hardware config of the claw (default: {rel_root(HARDWARE_CONFIG)})")
    p.add_argument("--port", metavar="DEV", help="serial device instead of the config's (or the pty of a running "
                   "`s2r emulate`)")
    p.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=None,
                   help="run the emulator the demo starts in simulated time (the default with --driver emulator and "
                   "no --port: deterministic, faster than real time); --no-lockstep runs it in real time")
    cliargs.add_json_flag(p, "the paths of demo.json and report.md, the wall time and the table's rows")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    require_torch("s2r demo")  # before --force removes an earlier demo
    target = demo_target(args.robot, args.driver, args.port, args.reality, args.lockstep)
    out: Path = args.out or Path("runs") / ("demo-quick" if args.quick else "demo")
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise UserError(f"{str(out)!r} already holds a demo; pass --force to replace it or pick another --out")
        shutil.rmtree(out)
    data = run_demo(out, args.quick, args.seed, quiet=args.quiet, target=target)
    summary = {"json": str(out / JSON_NAME), "report": data["report"], "quick": data["quick"], "seed": data["seed"],
               "wall_time_s": data["wall_time_s"], "table": data["table"]}
    cliargs.print_result(args.json, summary, summary_lines(data))
    return 0


def summary_lines(data: dict[str, Any]) -> list[str]:
    """What ``s2r demo`` prints at the end (without ``--json``), from ``run_demo``'s data or ``demo.json``."""
    rows = [Row(**r) for r in data["table"]]
    loop = data["deploy"]["finetuned"]["loop"]
    return [
        f"s2r demo ({'quick' if data['quick'] else 'full'} budget, seed {data['seed']}) in {data['wall_time_s']:.0f} s",
        table(rows),
        f"control loop on the {data['robot']['where']}: cycle p50 {_fmt(loop.get('cycle_time_p50_us'), 0)} us, p99 "
        f"{_fmt(loop.get('cycle_time_p99_us'), 0)} us; period error p99 {_fmt(loop.get('period_error_p99_us'), 0)}"
        f" us; overruns {loop.get('overruns')}",
        _verdict(data["deploy"]["first"]["success_rate"], data["deploy"]["finetuned"]["success_rate"]),
        f"report: {data['report']}",
    ]

