"""The sample task of `notebook-agent demo`: prints, shows a progress bar, and computes a small result."""

import platform
import sys
import time

print(f"hello from a task run by notebook-agent (Python {platform.python_version()} in {sys.prefix})")
for step in range(0, 101, 20):
    # Carriage returns redraw the line, as tqdm does; only the last state reaches the log.
    print(f"\rprogress {step:3d}%", end="", flush=True)
    time.sleep(0.05)
print()
primes = [n for n in range(2, 200) if all(n % d for d in range(2, int(n**0.5) + 1))]
print(f"result: {len(primes)} primes below 200, the largest is {primes[-1]}")
print("a line on stderr: the log keeps it where it was written, after the result", file=sys.stderr)
