"""time.sleep: wall time only (compared on wall samples; py-spy with --idle)."""
import time

WALL = True


def once():
    time.sleep(0.02)  # <- callee
