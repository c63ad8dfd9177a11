"""Real-time controller, Dynamixel bus, servo emulator and in-process mock (the hardware path)."""
