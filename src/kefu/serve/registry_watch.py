"""Follow the adapter registry while serving: the promoted version is served under one model name, and a
promotion or rollback swaps it in without a restart (``kefu serve --registry``)."""

from __future__ import annotations

import logging
import threading

from kefu.loop.registry import Registry
from kefu.types import KefuError

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Keeps ``engine``'s adapter ``name`` equal to the registry's current version."""

    def __init__(self, engine, registry: Registry | None = None, *, name: str = "shop", interval_s: float = 5.0):
        if not hasattr(engine, "load_adapter"):
            raise KefuError("--registry needs the local engine (a remote server loads adapters itself)")
        self.engine, self.registry, self.name, self.interval_s = engine, registry or Registry(), name, interval_s
        self.version: str | None = None
        self._stop = threading.Event()

    def sync(self) -> str | None:
        """Load the current version if it changed; returns the version now served (None before any promotion)."""
        current = self.registry.current()
        if current is not None and current["version"] != self.version:
            self.engine.load_adapter(self.name, current["adapter"])
            log.info("registry: now serving %s as %r", current["version"], self.name)
            self.version = current["version"]
        return self.version

    def start(self) -> threading.Thread:
        """Sync now, then poll in a daemon thread until ``stop``."""
        self.sync()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.sync()
                except Exception:  # a bad registry write must not take the server down; the old adapter stays
                    log.exception("registry: sync failed; still serving %s", self.version)

        thread = threading.Thread(target=loop, name="kefu-registry-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
