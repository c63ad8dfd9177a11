"""``s2r deploy``: run a policy on the robot (or the emulator, or the mock) for N episodes, logging each.

Exit codes (:func:`deploy_exit_code`): 0 when every episode ran or a stop was requested (SIGINT/SIGTERM)
and the torque is confirmed off, logs flushed; :data:`EXIT_SAFETY_STOP` (3) when the watchdog, a servo
hardware error, a bus or a policy failure, or too many held actions stopped the robot (the reason is
printed); :data:`EXIT_PORT_LOST` (4) when the servos' or the IMU's serial port went away mid-run (the
summary and every episode, the one in progress included, are still written); :data:`EXIT_TORQUE_NOT_OFF`
(5) when the run ended otherwise but the torque-off was not confirmed by the servos; 2 for bad input
(the ``s2r`` main's UserError).

Also ``s2r trajlog-dataset``: trajectory logs to an offline-RL dataset (``policies.dataset``: npz; Minari,
``policies.minari_dataset``; LeRobot, ``policies.lerobot_dataset``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from policies.dataset import dataset_metadata, save_dataset, trajlog_segments, trajlog_to_dataset
from robot.goals import parse_goal
from robot.view import SPAWN
from s2r import cliargs
from s2r.api import DeployJob, deploy
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import MissingExtra, require
from s2r.core.trajlog import SkipLog
from s2r.policy_files import POLICY_FILES, SCRIPTED_POLICIES, SCRIPTED_PREFIX

EXIT_SAFETY_STOP = 3
"""Exit status of ``s2r deploy`` when a safety stop ended the run."""
EXIT_PORT_LOST = 4
"""Exit status of ``s2r deploy`` when the servos' or the IMU's serial port was lost (stop kind ``port_lost``)."""
EXIT_TORQUE_NOT_OFF = 5
"""Exit status of ``s2r deploy`` when the run ended without a failure but the torque-off was not confirmed: the
servos may still be powered."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DATASET_FORMATS = ("npz", "minari", "lerobot")
"""What ``s2r trajlog-dataset --format`` writes."""


def register(sub: Any) -> None:
    """Add ``deploy`` and ``trajlog-dataset`` to the ``s2r`` subcommands."""
    p = sub.add_parser(
        "deploy",
        help="run a policy on the robot, the emulator or the mock bus for N episodes and log every episode",
        description="Run a policy at the hardware config's control rate: scripted reset, then one episode of "
        "policy steps, N times; each episode is written to --log-dir as soon as it ends. SIGINT/SIGTERM stop "
        "the run (torque off, logs flushed, exit 0); a safety stop (watchdog, servo hardware error, bus or "
        f"policy failure, too many held actions) holds, turns the torque off and exits {EXIT_SAFETY_STOP}; a lost "
        f"serial port exits {EXIT_PORT_LOST}; a torque-off the servos did not confirm exits {EXIT_TORQUE_NOT_OFF}.",
    )
    p.add_argument("policy", metavar="POLICY",
                   help=f"{POLICY_FILES}, or {', '.join(SCRIPTED_PREFIX + n for n in SCRIPTED_POLICIES)} for "
                   "bring-up and tests; "
                   "scripted:excite moves each joint along its own multi-sine (distinct frequencies, inside the "
                   "joint limits, under the velocity limit, phases seeded by --seed): the episodes to log for "
                   "`s2r adapt`")
    p.add_argument("--robot", required=True, metavar="YAML", help="hardware config, e.g. hardware_configs/dclaw.yaml")
    p.add_argument("--driver", required=True, choices=("emulator", "dynamixel", "mock"),
                   help="emulator: a physics-backed servo emulator (started here unless --port); dynamixel: the "
                   "real servos; mock: in-process first-order servos")
    p.add_argument("--port", metavar="PATH", help="serial device (overrides the config's port), or the pty of a "
                   "running `s2r emulate`")
    p.add_argument("--imu-port", metavar="PATH", help="the IMU's serial device (overrides the config's imu.port), or "
                   "the second line of a running `s2r emulate` (robots with an imu section)")
    p.add_argument("--reality", metavar="YAML", help="reality file for the emulator started here")
    p.add_argument("--faults", metavar="SPEC", help="faults to inject (emulator started here, or mock): a YAML file "
                   "or a spec such as 'drop=0.01,silent=21@5s' or, with an IMU, 'imu_silent@2s,imu_corrupt=0.05'")
    p.add_argument("--lockstep", action="store_true",
                   help="emulator or mock driver: run in the robot's simulated time (deterministic for a seed, faster "
                   "than real time); the default is real time")
    p.add_argument("--clock-socket", metavar="PATH", help="with --lockstep and --port: the time socket a running "
                   "`s2r emulate --lockstep` printed on its last line")
    p.add_argument("--episodes", required=True, type=int, metavar="N", help="episodes to run")
    p.add_argument("--log-dir", required=True, metavar="DIR",
                   help="trajectory log directory to write: run.json and one episode file per episode")
    p.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the episode starts and goals")
    p.add_argument("--task", metavar="NAME", help="task variant for the goals (e.g. dclaw-turn-random); default: "
                   "the one the policy was trained on when its file says, else the hardware config's task")
    p.add_argument("--episode-steps", type=int, metavar="T", help="policy steps per episode (default: the task's; "
                   "fewer only for smoke tests)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--goal", type=goal_arg, metavar="NAME=VALUE[,...]",
                      help="the goal of every episode, the task's named goal values in SI units (the claw: "
                      "target=1.57, the valve angle in rad, -pi to pi); default: the task draws each episode's goal")
    goal.add_argument("--goal-schedule", metavar="FILE.yaml",
                      help="one goal per episode, in order: a YAML file 'goals: [{target: 1.57}, {target: -0.5}]' "
                      "holding at least --episodes goals")
    p.add_argument("--perception", metavar="MODEL",
                   help="a valve-angle estimator (`s2r train-perception`'s perception.onnx): POLICY, a D'Claw turn "
                   "state policy, observes the valve through the hardware config's camera (emulator: the stream of "
                   "its rendering) instead of the encoder, which is still logged")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_view_argument(p)
    p.set_defaults(func=run_deploy)

    d = sub.add_parser(
        "trajlog-dataset",
        help="convert trajectory logs to an offline-RL dataset (.npz with D4RL-style keys, Minari or LeRobot)",
        description="Write the usable transitions of every complete logged episode as a dataset. npz: "
        "observations, actions, rewards, next_observations, terminals and timeouts (D4RL naming) in one .npz file. "
        "minari: a Minari dataset under the datasets root --out (load it with minari.load_dataset(ID) and "
        "MINARI_DATASETS_PATH=OUT); its env spec recovers the environment. lerobot: a LeRobot v3.0 dataset in the "
        "new directory --out (LeRobotDataset(REPO_ID, root=OUT)). Minari and LeRobot keep the env id, robot, joint "
        "names, control period and observation layout in their metadata, and camera frames where the logs have "
        "them; they need the `datasets` extra.",
    )
    cliargs.add_renamed_argument(d, "--log-dir", old="LOG_DIR", required=True, metavar="DIR",
                                 help="trajectory log directory to read, written by s2r deploy or s2r simlogs")
    d.add_argument("--out", required=True, metavar="FILE.npz|DIR",
                   help="npz: the file to write; minari: the Minari datasets root to write the dataset under; "
                   "lerobot: the dataset directory to create")
    d.add_argument("--format", choices=DATASET_FORMATS, default="npz", help="dataset format")
    d.add_argument("--dataset-id", metavar="ID", help="minari: the dataset id, (NAMESPACE/)NAME-vN (default "
                   "s2r/TASK-ROBOT-SOURCE-v0)")
    d.add_argument("--env-id", metavar="ID", help="minari and lerobot: the gymnasium id the episodes ran (default: "
                   "what the logs recorded, else their task's)")
    d.add_argument("--include-partial", action="store_true", help="also use episodes that were stopped early")
    d.add_argument("--strict", action="store_true",
                   help="fail on the first damaged episode file instead of skipping it with a warning")
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    d.set_defaults(func=run_dataset)


def add_view_argument(p: argparse.ArgumentParser) -> None:
    """``--view [FILE.rrd]``: the live view of the robot's episodes (``s2r deploy``, ``s2r finetune``); the API
    checks its value (:func:`robot.view.check_view_target`) and the extra before anything is written."""
    p.add_argument("--view", nargs="?", const=SPAWN, metavar="FILE.rrd",
                   help="show each step live in Rerun (the `view` extra: pip install 's2r[view]'): commanded and "
                   "measured joints, passive joints, IMU, loop timing, comm errors; with FILE.rrd, record to that "
                   "file instead of starting a viewer (open it with `rerun FILE.rrd`)")


def goal_arg(text: str) -> dict[str, float]:
    """``--goal``'s value, ``NAME=VALUE[,NAME=VALUE...]`` (the names and ranges are the task's, checked later)."""
    try:
        return parse_goal(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- signals --------------------------------------------------------------------------------------
class StopRequest:
    """Set by SIGINT/SIGTERM; the controller polls it once per cycle."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name

    def poll(self) -> str | None:
        return self.reason


def _install(handler: Callable[[int, FrameType | None], None]) -> dict[signal.Signals, Any]:
    return {s: signal.signal(s, handler) for s in STOP_SIGNALS}


# --- deploy ---------------------------------------------------------------------------------------
def run_deploy(args: argparse.Namespace) -> int:
    """``s2r deploy``: :func:`s2r.api.deploy` with SIGINT/SIGTERM as its stop request; returns the exit code."""
    logger = logging.getLogger("robot.deploy")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("s2r deploy: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    request = StopRequest()
    previous = _install(request.handle)
    try:
        job = DeployJob(policy=args.policy, robot=args.robot, log_dir=Path(args.log_dir), driver=args.driver,
                        episodes=args.episodes, seed=args.seed, port=args.port, imu_port=args.imu_port,
                        reality=args.reality, faults=args.faults,
                        lockstep=args.lockstep, clock_socket=args.clock_socket, task=args.task,
                        episode_steps=args.episode_steps, view=args.view, goal=args.goal,
                        goal_schedule=args.goal_schedule, perception=args.perception)
        result = deploy(job, should_stop=request.poll, logger=logger)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    summary = result.summary
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(summary.describe())
    code = deploy_exit_code(summary.stop_kind, summary.torque_off)
    if summary.stop_kind == "port_lost":
        print(f"s2r deploy: port lost: {summary.stop_reason}", file=sys.stderr)
    elif summary.stop_kind == "safety":
        print(f"s2r deploy: safety stop: {summary.stop_reason}", file=sys.stderr)
    if not summary.torque_off:
        print("s2r deploy: the torque-off was NOT confirmed: the servos may still be powered", file=sys.stderr)
    return code


def deploy_exit_code(stop_kind: str, torque_off: bool) -> int:
    """The exit status of a run that stopped with ``stop_kind`` (see the module docstring)."""
    if stop_kind == "port_lost":
        return EXIT_PORT_LOST
    if stop_kind == "safety":
        return EXIT_SAFETY_STOP
    return 0 if torque_off else EXIT_TORQUE_NOT_OFF


def run_dataset(args: argparse.Namespace) -> int:
    """``s2r trajlog-dataset``; returns the exit code."""
    if args.format != "npz":
        if args.format == "minari":
            require("minari", extra="datasets", purpose="s2r trajlog-dataset --format minari")
        require("pyarrow", extra="datasets", purpose=f"s2r trajlog-dataset --format {args.format}")
        return _run_episode_dataset(args)
    skipped = SkipLog("s2r trajlog-dataset")
    try:
        data = trajlog_to_dataset(args.log_dir, include_partial=args.include_partial, strict=args.strict,
                                  on_skip=skipped)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args, {"directory": "--log-dir"}) from None
    path = save_dataset(data, args.out)
    n = int(data["rewards"].shape[0])
    if args.json:
        print(json.dumps({"out": str(path), "transitions": n, "episodes": int(data["timeouts"].sum()),
                          "skipped_files": skipped.to_json()}))
    else:
        print(f"wrote {n} transitions to {path}")
    return 0


def _run_episode_dataset(args: argparse.Namespace) -> int:
    """``s2r trajlog-dataset --format minari|lerobot``."""
    skipped = SkipLog("s2r trajlog-dataset")
    flags = {"directory": "--log-dir", "env_id": "--env-id", "dataset_id": "--dataset-id"}
    try:
        segments = trajlog_segments(args.log_dir, include_partial=args.include_partial, strict=args.strict,
                                    on_skip=skipped)
        metadata = dataset_metadata(args.log_dir, segments, args.env_id)
        if args.format == "minari":
            # The extra, loaded on demand: the base install has neither minari nor pyarrow.
            from policies.minari_dataset import write_minari

            path = write_minari(segments, metadata, args.out, args.dataset_id)
        else:
            from policies.lerobot_dataset import write_lerobot

            path = write_lerobot(segments, metadata, args.out)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args, flags) from None
    n = sum(s.steps for s in segments)
    if args.json:
        print(json.dumps({"out": str(path), "format": args.format, "transitions": n, "episodes": len(segments),
                          "source_episodes": len(metadata["source_episodes"]), "env_id": metadata["env_id"],
                          "skipped_files": skipped.to_json()}))
    else:
        print(f"wrote {n} transitions in {len(segments)} episodes ({args.format}) to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m s2r.commands.robot deploy ...``: the same as ``s2r deploy ...`` (and ``trajlog-dataset``)."""
    parser = cliargs.Parser(prog="python -m s2r.commands.robot")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (UserError, MissingExtra, FileNotFoundError) as exc:
        print(f"s2r {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
