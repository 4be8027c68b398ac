"""OpenAI-compatible provider simulator: real HTTP, real limits, injected faults.

Start it with ``lakeloom sim`` / ``python -m lakeloom.sim``, or from Python with
``start_subprocess`` (own process, for throughput) or ``start_thread`` (quick checks).
"""

from lakeloom.sim.config import SimConfig as SimConfig
from lakeloom.sim.launch import SimHandle as SimHandle
from lakeloom.sim.launch import start_subprocess as start_subprocess
from lakeloom.sim.launch import start_thread as start_thread
