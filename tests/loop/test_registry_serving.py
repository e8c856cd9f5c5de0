"""A promotion reaches a running engine without a restart; a rollback too."""

import asyncio

from kefu.loop.registry import Registry
from kefu.serve.engine import LocalEngine, collect
from kefu.serve.registry_watch import RegistryWatcher
from kefu.train.models import load_model


def test_watcher_swaps_the_served_adapter(tiny_model, tiny_run):
    model, tokenizer = load_model(str(tiny_model))
    engine = LocalEngine(model, tokenizer, base_name="base", max_new_tokens=4)
    registry = Registry()
    watcher = RegistryWatcher(engine, registry, interval_s=0.05)
    assert watcher.sync() is None and "shop" not in engine.models()  # nothing promoted yet

    registry.register(tiny_run / "adapter", base_model=str(tiny_model))
    registry.register(tiny_run / "adapter", base_model=str(tiny_model))
    registry.promote("v1")
    assert watcher.sync() == "v1" and engine.adapters["shop"] == registry.get("v1")["adapter"]
    registry.promote("v2")
    assert watcher.sync() == "v2" and engine.adapters["shop"] == registry.get("v2")["adapter"]
    registry.rollback()
    assert watcher.sync() == "v1"

    async def ask():
        try:
            return await collect(engine.stream([{"role": "user", "content": "在吗"}], model="shop"))
        finally:
            await engine.close()

    assert isinstance(asyncio.run(ask()), str)
