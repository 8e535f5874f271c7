"""Real servers on free ports: tests that must see streaming and disconnects as a client does.

The same helper the demo uses, so tests run the listeners exactly as the gateway does.
"""

from gateway.server import free_port, running

__all__ = ["free_port", "running"]
