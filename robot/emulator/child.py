"""Entry point of the emulator's child process: ``python -m robot.emulator.child FD`` (see ``process``)."""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from robot.emulator.process import child_main

if __name__ == "__main__":
    child_main(Connection(int(sys.argv[1])))
