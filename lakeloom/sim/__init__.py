"""OpenAI-compatible provider simulator: real HTTP, real limits, injected faults.

Start it with ``lakeloom sim`` / ``python -m lakeloom.sim``, or from Python with
``start_subprocess`` (own process, for throughput) or ``start_thread`` (quick checks).
"""

from lakeloom.sim.config import SimConfig
from lakeloom.sim.launch import SimHandle, start_subprocess, start_thread

__all__ = ["SimConfig", "SimHandle", "start_subprocess", "start_thread"]
