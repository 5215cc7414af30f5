"""Local TCP ports for the tests that start servers or process groups (gloo ranks, a Ray head, a dashboard)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A free TCP port below the kernel's ephemeral range. A port the kernel hands out (bind to 0) is free now,
    but the spawned ranks bind it seconds later, and meanwhile any outgoing connection on the machine (Ray's,
    another test's) may be given the same port: EADDRINUSE. Below that range only an explicit listener can
    take it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux
        low = 32768
    rng = random.Random()  # not the tests' seeded global stream: concurrent sessions must not pick alike
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and the ephemeral range")
