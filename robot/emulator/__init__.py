"""A physics-backed Dynamixel protocol 2.0 servo emulator on a pseudo-terminal.

The servos are the joints of the simulated robot: goal positions drive the simulation, present
positions, velocities and currents come from it, quantized like the real encoders. See ``server``
(timing), ``chain`` (instructions), ``servo`` (control table rules), ``physics`` (real-time stepping),
``reality`` (the reality YAML), ``faults`` (the fault spec) and ``imu`` (a legged robot's IMU on a second pty).
"""

from robot.emulator.faults import NO_FAULTS, FaultSpec, faults_from_arg, load_faults, parse_faults
from robot.emulator.process import Emulator, EmulatorError
from robot.emulator.reality import NOMINAL_REALITY, RealityConfig, load_reality, reality_from_mapping

__all__ = [
    "NOMINAL_REALITY",
    "NO_FAULTS",
    "Emulator",
    "EmulatorError",
    "FaultSpec",
    "RealityConfig",
    "faults_from_arg",
    "load_faults",
    "load_reality",
    "parse_faults",
    "reality_from_mapping",
]
