"""Run every atheris harness in fuzz/ for a bounded time (placeholder until harnesses land)."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=int, default=20)
parser.parse_args()
print("no fuzz harnesses yet")
