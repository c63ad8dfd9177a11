"""Everything the controller talks to on one robot: the servo bus, the IMU when there is one, and scene placement.

:func:`open_robot` makes them for a driver (``dynamixel``, ``emulator``, ``mock``; see ``robot.bus``) and hands them
to the caller, who passes them to the :class:`~robot.controller.Controller` (dependency injection: the controller
never knows which driver it runs on). A robot without an ``imu`` section gets exactly what
:func:`robot.bus.make_bus` makes, and no IMU.

Scene placement (:class:`ScenePlacer`) is the episode reset no servo can do: putting a legged robot's floating
base back on the floor at the episode's start pose. The emulator (started by :func:`open_robot`, through its
control connection) and the mock do it at once; on the real robot a person does it, so the ``dynamixel``
driver has no placer, and neither has an emulator started elsewhere (``s2r emulate``), which has no control
connection to this process. Without a placer the episode starts where the robot stands, and its log's meta says
so (``base_reset``). Passive joints with a servo of their own (the claw's valve) are reset by that servo
instead (``Bus.passive_driven``).

An emulator started here also tells the world's true state (:class:`GroundTruth`, ``RobotIO.truth``), so a run can
be judged on the physics as well as on what the robot senses (a walk's success where the torso's position is only
estimated). Nothing acts on it.

``OpenOptions(lockstep=True)`` (the emulator and mock drivers) runs the robot in simulated time: the emulator's
(``robot.emulator.lockstep``), or for the mock a clock only sleeps move (``robot.simtime``). The :class:`RobotIO`'s
``clock`` and ``sleep`` are then that time's, and the controller must take them. An emulator
started here is told so through its control connection; one started elsewhere (``s2r emulate --lockstep``) through
the time socket it printed (``clock_socket``).

A robot whose config has a ``tracker`` gets its position source too (:func:`make_tracker`): for ``mocap`` a
:class:`~robot.tracker.udp.PoseReceiver` on ``127.0.0.1:<tracker.port>`` (an emulator started here sends its poses
there, to the port actually bound when the config says 0; the mock driver has a
:class:`~robot.tracker.mock.MockPoseStream`), for ``estimator`` the task's leg odometry
(:class:`~robot.tracker.estimator.LegOdometry`).

``OpenOptions(camera=True)`` opens the config's ``camera`` too (:func:`open_camera`: a
:class:`~robot.camera.reader.CameraReader` on OpenCV, the ``camera`` extra): its ``source``, or for ``auto`` the MJPEG
stream of the emulator started here, which is asked to serve one. In lock-step the reader has the emulator render each
frame it polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from robot.bus import DRIVERS, Bus, make_bus
from robot.camera.reader import CameraReader, CameraSource
from robot.config import AUTO_PORT, ImuConfig, RobotConfig
from robot.imu.reader import ImuReader, ImuSource, SerialByteSource
from robot.simtime import SimTime
from robot.tracker.estimator import LegOdometry
from robot.tracker.source import PoseSource
from robot.tracker.udp import PoseReceiver
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import require
from sim import resolve_env_id
from sim.odometry import Legs
from sim.state import RobotState
from sim.tasks import make_task
from sim.tasks.spec import FloatArray

if TYPE_CHECKING:
    from robot.controller import ControllerSettings
    from robot.emulator.faults import FaultSpec
    from robot.emulator.reality import RealityConfig
    from robot.imu.mock import MockImuStream
    from robot.mock import MockBus
    from robot.tracker.mock import MockPoseStream


class ScenePlacer(Protocol):
    """Puts an emulated or mock robot down at an episode's start."""

    def place(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None) -> None:
        """The robot at rest with these joints and passive joints (rad) and this floating-base pose (position (m),
        quaternion (w, x, y, z)); its servos hold the placed joints. Fails with an exception when it cannot."""
        ...


class MockScene:
    """Scene placement on the mock: the mock bus's joints and the mock IMU's torso orientation."""

    def __init__(self, bus: MockBus, imu: MockImuStream | None, tracker: MockPoseStream | None = None) -> None:
        self.bus = bus
        self.imu = imu
        self.tracker = tracker

    def place(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None) -> None:
        self.bus.place(joint_pos, passive_pos)
        if self.imu is not None and base_pose is not None:
            self.imu.place(base_pose[3:])
        if self.tracker is not None and base_pose is not None:
            self.tracker.place(base_pose[:3], base_pose[3:])


class GroundTruth(Protocol):
    """The emulated world's true state, which only an emulator knows: for measuring what the robot's own sensing
    reports (a run's success judged on the physics), never for acting on."""

    def true_state(self) -> RobotState:
        """The physics' state now."""
        ...


@dataclass
class RobotIO:
    """The bus, IMU, position source and scene placer of one robot; :meth:`close` releases them (the bus last)."""

    bus: Bus
    """The servo bus (not yet connected)."""
    imu: ImuSource | None = None
    """The torso IMU; ``None`` for a robot without one."""
    placer: ScenePlacer | None = None
    """Scene placement at episode starts; ``None`` where a person places the robot."""
    tracker: PoseSource | None = None
    """The torso's position source (the config's ``tracker``); ``None`` for a robot without one."""
    clock: Callable[[], float] = time.monotonic
    """The time the bus and IMU run on (s): the controller's ``clock``. The emulator's simulated time in lock-step."""
    sleep: Callable[[float], None] = time.sleep
    """How the controller waits (s): in lock-step, letting simulated time pass."""
    lockstep: bool = False
    """Whether ``clock`` is a lock-step emulator's simulated time (the controller must not spin on it)."""
    camera: CameraSource | None = None
    """The config's camera, when opened (``OpenOptions.camera``); ``None`` otherwise."""
    truth: GroundTruth | None = None
    """The emulator started here, which can tell the world's true state; ``None`` on hardware, the mock and an
    emulator started elsewhere."""

    def controller_settings(self, settings: ControllerSettings) -> ControllerSettings:
        """``settings`` for a controller on this robot's clock: in lock-step it must not spin, as simulated time
        moves only when it sleeps."""
        return replace(settings, spin_s=0.0) if self.lockstep else settings

    def close(self) -> None:
        try:
            if self.camera is not None:
                self.camera.close()
            if self.tracker is not None:
                self.tracker.close()
        finally:
            try:
                if self.imu is not None:
                    self.imu.close()
            finally:
                self.bus.close()

    def __enter__(self) -> RobotIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_driver_options(driver: str, lockstep: bool, clock_socket: str | None) -> None:
    """Refuse a driver, lock-step and time-socket combination that cannot run (a command checks this before it writes
    anything; :func:`open_robot` checks it again)."""
    if driver not in DRIVERS:
        raise UserError(f"unknown bus driver {driver!r}; expected one of {', '.join(DRIVERS)}")
    if clock_socket is not None and not lockstep:
        raise ParameterError("clock_socket", "is the time socket of a lock-step emulator: it needs {lockstep}")
    if not lockstep:
        return
    if driver == "mock" and clock_socket is not None:
        raise ParameterError("clock_socket", "is the time socket of a lock-step emulator started elsewhere; the mock "
                             "has its own simulated time (drop {clock_socket})")
    if driver not in ("emulator", "mock"):
        raise ParameterError("lockstep", f"runs a simulated robot in simulated time; the {driver} driver runs in real "
                             "time (set {driver} to emulator or mock, or drop {lockstep})")


@dataclass(frozen=True)
class OpenOptions:
    """How :func:`open_robot` opens a robot on its driver, beyond the config: every field's default is the plain
    case (the config's port, a real-time robot)."""

    port: str | None = None
    """The bus's serial port, as for :func:`robot.bus.make_bus`; for the emulator driver, that of an emulator
    started elsewhere (``s2r emulate``; ``None``: one is started here)."""
    imu_port: str | None = None
    """Overrides ``config.imu.port``: the second line of ``s2r emulate`` for an emulator started elsewhere."""
    reality: RealityConfig | None = None
    """The reality of an emulator started here (see :func:`robot.bus.make_bus`)."""
    faults: FaultSpec | None = None
    """Faults the emulator or the mock injects (see :func:`robot.bus.make_bus`)."""
    clock: Callable[[], float] = time.monotonic
    """The mock's time source (s), also the IMU reader's and the position source's."""
    interrupt: Callable[[], object] | None = None
    """Ends a Dynamixel bus's read retries (see :func:`robot.bus.make_bus`)."""
    lockstep: bool = False
    """Run the emulator or the mock in simulated time (module docstring)."""
    clock_socket: str | None = None
    """With ``port`` and ``lockstep``: the time socket that ``s2r emulate --lockstep`` printed."""
    camera: bool = False
    """Open the config's ``camera`` (an emulator started here serves it); the config must have one."""


def open_robot(config: RobotConfig, driver: str, options: OpenOptions = OpenOptions()) -> RobotIO:
    """The bus (not yet connected), IMU, position source and placer of ``config``'s robot on ``driver``, opened as
    ``options`` say."""
    check_driver_options(driver, options.lockstep, options.clock_socket)
    if options.camera:
        check_camera_options(config, driver, options)
    io = _open_robot_sensors(config, driver, options)
    if not options.camera:
        return io
    try:
        return replace(io, camera=open_camera(config, io))
    except BaseException:
        io.close()
        raise


def check_camera_options(config: RobotConfig, driver: str, options: OpenOptions) -> None:
    """Refuse a camera that cannot be opened on this driver (before anything starts)."""
    camera = config.camera
    if camera is None:
        raise UserError(f"{config.source} has no camera section: a camera's source, frame rate and stale-frame bound "
                        "are needed to read frames")
    require("cv2", extra="camera", purpose="a camera (OpenCV's VideoCapture, and the emulator's stream)")
    if driver == "mock":
        raise UserError("the mock driver has no camera; use the emulator driver, which streams its rendering")
    if camera.source == AUTO_PORT and (driver == "dynamixel" or options.port is not None):
        raise UserError(f"{config.source}: camera.source 'auto' is the stream of an emulator started by this process; "
                        "name the camera's index or stream URL in camera.source")


def open_camera(config: RobotConfig, io: RobotIO) -> CameraSource:
    """The reader of ``config``'s camera on the robot ``io`` was opened on: its ``source``, or for ``auto`` the stream
    of the emulator that is ``io``'s placer; in lock-step it has that emulator render each frame it polls."""
    # The camera extra (OpenCV) is loaded only where a camera is opened.
    from robot.camera.opencv import OpenCvFrameSource
    from robot.emulator import Emulator

    camera = config.camera
    assert camera is not None  # check_camera_options
    emulator = io.placer if isinstance(io.placer, Emulator) else None
    source: int | str = camera.source
    if source == AUTO_PORT:
        if emulator is None or emulator.camera_url is None:
            raise UserError("camera.source 'auto' needs an emulator started here that serves a camera")
        source = emulator.camera_url
    frames = OpenCvFrameSource(source, camera)
    if io.lockstep and emulator is not None and source == emulator.camera_url:
        return CameraReader(frames, camera, clock=io.clock, expected=emulator.clock.camera_frame)
    reader = CameraReader(frames, camera, clock=io.clock)
    reader.start()
    return reader


def _open_robot_sensors(config: RobotConfig, driver: str, options: OpenOptions) -> RobotIO:
    """:func:`open_robot` but for the camera."""
    tracker = config.tracker
    if tracker is None or tracker.kind != "mocap" or driver == "mock":
        io = _open_robot(config, driver, options)
        if tracker is not None and tracker.kind == "estimator":
            io = replace(io, tracker=make_tracker(config, clock=io.clock))
        return io
    if tracker.port == 0 and (driver == "dynamixel" or options.port is not None):
        raise UserError(f"{config.source}: tracker.port 0 (any free port) works only with an emulator started by this "
                        "process, which is told the port; a motion-capture bridge or an emulator started elsewhere "
                        "needs the port named in tracker.port")
    # Bound before an emulator starts sending, and its port told to an emulator started here.
    receiver = PoseReceiver(tracker.port, velocity_window_s=tracker.velocity_window_s, clock=options.clock)
    try:
        served = replace(config, tracker=replace(tracker, port=receiver.port))
        io = _open_robot(served, driver, options, receiver)
    except BaseException:
        receiver.close()
        raise
    return replace(io, tracker=receiver)


def make_tracker(config: RobotConfig, *, clock: Callable[[], float] = time.monotonic) -> PoseSource | None:
    """The position source of ``config``'s ``tracker`` on its own: a :class:`PoseReceiver` on ``tracker.port`` for
    ``mocap`` (a bridge sends there), the task's :class:`LegOdometry` for ``estimator``; ``None`` without one."""
    tracker = config.tracker
    if tracker is None:
        return None
    if tracker.kind == "mocap":
        return PoseReceiver(tracker.port, velocity_window_s=tracker.velocity_window_s, clock=clock)
    task = make_task(resolve_env_id(config.task))
    if not (hasattr(task, "feet") and hasattr(task, "foot_radius")):
        raise UserError(f"{config.source}: tracker.kind estimator needs a legged task's kinematics (feet, "
                        f"foot_radius); the task {config.task!r} has none")
    legs: Legs = task  # type: ignore[assignment]  # checked above: a legged task has feet and foot_radius
    return LegOdometry(legs, stance_tolerance_m=tracker.stance_tolerance_m,
                       velocity_window_s=tracker.velocity_window_s, clock=clock)


def _open_robot(config: RobotConfig, driver: str, options: OpenOptions,
                receiver: PoseReceiver | None = None) -> RobotIO:
    """:func:`open_robot` but for a motion-capture ``receiver`` (already bound; lock-step puts it on its clock)."""
    port, imu_port, reality, faults = options.port, options.imu_port, options.reality, options.faults
    clock, interrupt = options.clock, options.interrupt
    if options.lockstep:
        if driver == "mock":
            # The mock integrates its servos up to any clock reading, so lock-step is a clock only sleeps move.
            sim_time = SimTime()
            io = _open_robot(config, "mock", replace(options, reality=None, clock=sim_time, lockstep=False))
            return replace(io, clock=sim_time, sleep=sim_time.sleep, lockstep=True)
        return _open_lockstep(config, options, receiver)
    imu_config = config.imu
    if imu_config is None and options.camera and driver == "emulator" and port is None:
        if faults is not None and faults.any_imu:
            raise UserError(f"IMU faults ({faults.describe()}) need an IMU: {config.source} has no imu section")
        return _started_emulator(config, options, None)
    if imu_config is None:
        if imu_port is not None:
            raise ParameterError("imu_port", f"was given, but {config.source} has no imu section")
        if faults is not None and faults.any_imu:
            raise UserError(f"IMU faults ({faults.describe()}) need an IMU: {config.source} has no imu section")
        # No floating base (the config would need an IMU for one), so nothing to place either.
        return RobotIO(make_bus(config, driver, port, reality=reality, faults=faults, clock=clock,
                                interrupt=interrupt))

    if driver == "mock":
        from robot.imu.mock import MockImuStream
        from robot.mock import MockBus
        from robot.tracker.mock import MockPoseStream

        if imu_port is not None:
            raise ParameterError("imu_port", "applies to the emulator and dynamixel drivers; the mock driver has its "
                                 "own IMU")
        mock = MockBus(config, faults=faults, clock=clock)
        stream = MockImuStream(imu_config, clock=clock, faults=faults, cycle=lambda: mock.read_transactions)
        poses = (MockPoseStream(config.tracker, clock=clock)
                 if config.tracker is not None and config.tracker.kind == "mocap" else None)
        return RobotIO(mock, ImuReader(stream, imu_config, clock=clock), MockScene(mock, stream, poses),
                       tracker=poses)

    if driver == "dynamixel":
        path = imu_port or imu_config.port
        if path == AUTO_PORT:
            raise ParameterError("imu_port", f"is needed: in {config.source}, imu.port 'auto' means the emulator's or "
                                 "the mock's IMU; on the real robot name the IMU's serial device in imu.port or with "
                                 "{imu_port}")
        bus = make_bus(config, "dynamixel", port, interrupt=interrupt)
        return RobotIO(bus, _serial_imu(path, imu_config, clock, bus))

    # emulator
    if port is not None:
        path = imu_port or imu_config.port
        if path == AUTO_PORT:
            raise ParameterError("imu_port", f"is needed: the emulator on {port} serves its IMU on the pty it printed "
                                 "on its second line")
        bus = make_bus(config, "emulator", port, reality=reality, faults=faults, interrupt=interrupt)
        return RobotIO(bus, _serial_imu(path, imu_config, clock, bus))
    if imu_port is not None:
        raise ParameterError("imu_port", "needs {port}: an emulator started here serves its own IMU")
    return _started_emulator(config, options, imu_config)


def _started_emulator(config: RobotConfig, options: OpenOptions, imu_config: ImuConfig | None) -> RobotIO:
    """An emulator started here in real time, its bus, and its IMU when ``imu_config``; the emulator is the placer."""
    from robot.dynamixel.bus import DynamixelBus
    from robot.emulator import Emulator, EmulatorError

    emulator = Emulator(config, reality=options.reality, faults=options.faults, camera=options.camera)
    servo_path = emulator.start()
    try:
        bus = DynamixelBus(config, servo_path, on_close=emulator.stop, interrupt=options.interrupt)
    except BaseException:
        emulator.stop()
        raise
    if imu_config is None:
        return RobotIO(bus, None, emulator, truth=emulator)
    if emulator.imu_port is None:
        bus.close()
        raise EmulatorError("the emulator of a robot with an imu section did not open an IMU port")
    return RobotIO(bus, _serial_imu(emulator.imu_port, imu_config, options.clock, bus), emulator, truth=emulator)


def _open_lockstep(config: RobotConfig, options: OpenOptions, receiver: PoseReceiver | None = None) -> RobotIO:
    """The emulator driver in lock-step: an emulator started here, or the one on ``options.port`` driven through
    ``options.clock_socket``."""
    from robot.dynamixel.bus import DynamixelBus
    from robot.emulator import Emulator, EmulatorError
    from robot.emulator.lockstep import LockstepByteSource, LockstepClock, LockstepPortHandler, connect_clock

    port, imu_port, reality, faults = options.port, options.imu_port, options.reality, options.faults
    clock_socket = options.clock_socket
    emulator: Emulator | None = None
    if port is not None:
        if reality is not None or faults is not None:
            raise ParameterError("reality" if reality is not None else "faults", "applies to an emulator started "
                                 f"here; the emulator on {port} was started with its own reality and faults")
        if clock_socket is None:
            raise ParameterError("clock_socket", f"is needed: the lock-step emulator on {port} is driven through the "
                                 "time socket it printed on its last line")
        if config.imu is not None and imu_port is None:
            raise ParameterError("imu_port", f"is needed: the emulator on {port} serves its IMU on the pty it printed "
                                 "on its second line")
        clock: LockstepClock = connect_clock(clock_socket)
        servo_path, on_close = port, clock.close
    else:
        if imu_port is not None:
            raise ParameterError("imu_port", "needs {port}: an emulator started here serves its own IMU")
        if clock_socket is not None:
            raise ParameterError("clock_socket", "needs {port}: an emulator started here is driven directly")
        emulator = Emulator(config, reality=reality, faults=faults, lockstep=True, camera=options.camera)
        servo_path = emulator.start()
        clock, on_close = emulator.clock, emulator.stop
        imu_port = emulator.imu_port
    try:
        handler = LockstepPortHandler(servo_path, config.latency_timer_s, len(config.all_ids) * config.return_delay_s,
                                      clock)
        bus = DynamixelBus(config, servo_path, port_handler=handler, on_close=on_close, clock=clock.now,
                           sleep=clock.sleep, interrupt=options.interrupt)
    except BaseException:
        on_close()
        raise
    imu = None
    if config.imu is not None:
        if imu_port is None:
            bus.close()
            raise EmulatorError("the emulator of a robot with an imu section did not open an IMU port")
        try:
            imu = ImuReader(LockstepByteSource(imu_port, config.imu.baud, clock), config.imu, clock=clock.now)
        except BaseException:
            bus.close()
            raise
    if receiver is not None:
        receiver.follow(clock.now, lambda: clock.tracker_datagrams)
    return RobotIO(bus, imu, emulator, clock=clock.now, sleep=clock.sleep, lockstep=True, truth=emulator)


def _serial_imu(path: str, imu: ImuConfig, clock: Callable[[], float], bus: Bus) -> ImuReader:
    """An IMU reader on a serial device; the bus (and an emulator it owns) is closed if the port cannot open."""
    try:
        return ImuReader(SerialByteSource(path, imu.baud), imu, clock=clock)
    except BaseException:
        bus.close()
        raise
