"""Entry point of the emulator's child process: ``python -m robot.emulator.child FD`` (see ``process``)."""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

from robot.emulator.process import child_main

if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group; the owner must still be able to turn the
    # torque off through this emulator, so the owner alone decides when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child_main(Connection(int(sys.argv[1])))
