"""s2r: train a control policy in simulation, run it on the robot."""

__version__ = "0.1.0"
