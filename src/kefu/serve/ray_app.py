"""``kefu serve --ray``: the gateway and the model engine as two Ray Serve deployments, each autoscaled.

- ``engine``: replicas of the engine ``kefu serve`` would run here (``build_service``'s: local CPU batching, or
  ``remote`` in front of vLLM), called per answer with a streamed ``generate``;
- ``gateway``: the FastAPI app of ``kefu serve`` (``create_app``: keys, router, KG, verification, cache, sessions),
  whose engine is ``RayEngine``, a handle on the engine deployment. Without a model to serve (no run, adapter or
  ``--allow-base-model``) only the gateway runs and answers from the light path.

Both scale with ``kefu.serve.autoscale.LoadStepPolicy`` under ``serve.ray`` (capacity, bounds, delays). Ray is
imported inside functions only (a heavy dependency: ``pip install 'kefu[ray]'``). Without the CLI, Ray's own
``serve run`` takes the application builder with ``kefu.yaml`` as its config::

    serve run kefu.serve.ray_app:app_builder config=kefu.yaml run=RUN
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

from kefu.config import load_config
from kefu.serve.autoscale import autoscaling_config
from kefu.serve.build import build_service, parse_adapters, serves_base_model_only
from kefu.serve.config import RayDeploymentConfig, ServeConfig
from kefu.serve.engine.base import EngineError, Finished, Generation
from kefu.serve.gateway import Authenticator
from kefu.types import KefuError

APP_NAME = "kefu"
# what replicas take from the launching environment (kefu's state, keys, clock; offline hubs)
ENV_PREFIXES = ("KEFU_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


class EngineReplica:
    """One replica of the engine deployment: the engine ``kefu serve`` builds from the same config."""

    def __init__(self, config: dict[str, Any], run: str | None, adapters: dict[str, str]):
        self.engine = build_service(ServeConfig(**config), run=run, adapters=adapters).engine
        if self.engine is None:
            raise KefuError("the engine deployment has no model to serve (no run, adapter or allow_base_model)")

    def models(self) -> list[str]:
        return self.engine.models()

    async def generate(self, messages: list[dict[str, str]], options: dict[str, Any]) -> AsyncIterator[str | Finished]:
        """The engine's text pieces, then its ``Finished`` (what ``Generation`` reads on the gateway)."""
        generation = self.engine.stream(messages, **options)
        async for piece in generation:
            yield piece
        yield Finished(generation.finish_reason or "stop", generation.prompt_tokens, generation.completion_tokens)


class RayEngine:
    """The gateway's engine: answers streamed from the engine deployment (Ray queues and balances the requests)."""

    name = "ray"

    def __init__(self, handle, models: list[str]):
        self.handle = handle.options(stream=True)
        self._models = list(models)

    def models(self) -> list[str]:
        return list(self._models)

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0, repetition_penalty: float | None = None,
               no_repeat_ngram_size: int | None = None, stop: list[str] | None = None) -> Generation:
        options = {"model": model, "max_new_tokens": max_new_tokens, "temperature": temperature,
                   "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size,
                   "stop": stop}
        return Generation(self._generate(messages, options))

    async def _generate(self, messages, options) -> AsyncIterator[str | Finished]:
        response = self.handle.generate.remote(messages, options)
        finished = False
        try:
            async for item in response:
                finished = isinstance(item, Finished)
                yield item
        except EngineError:
            raise
        except Exception as exc:  # a replica that died or refused (Ray's errors): the pipeline's fallback answers
            raise EngineError(f"engine deployment failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
        finally:
            if not finished:  # the gateway stopped reading (a stop string, the deadline): stop the replica too
                response.cancel()

    async def close(self) -> None:
        return None


class Gateway:
    """One replica of the gateway deployment: ``kefu serve``'s app over ``RayEngine`` (Ray builds the app after
    ``__init__``, through ``__serve_build_asgi_app__``)."""

    def __init__(self, engine, config: dict[str, Any], run: str | None, adapters: dict[str, str]):
        self.engine_handle = engine
        self.config = ServeConfig(**config)
        self.run = run
        self.adapters = adapters

    async def __serve_build_asgi_app__(self):
        from kefu.serve.app import create_app  # deferred: heavy (fastapi)

        engine = None
        if self.engine_handle is not None:
            engine = RayEngine(self.engine_handle, await self.engine_handle.models.remote())
        service = build_service(self.config, run=self.run, adapters=self.adapters, engine=engine)
        return create_app(service, auth=Authenticator(enabled=self.config.auth))


def _replica_options(config: ServeConfig, deployment: RayDeploymentConfig) -> dict[str, Any]:
    """CPUs per replica; on a cluster (``serve.ray.address``) also kefu's environment, which replicas started by a
    local Ray inherit anyway (a runtime_env would make Ray start dedicated workers, seconds more per replica)."""
    options: dict[str, Any] = {"num_cpus": deployment.num_cpus}
    if config.ray.address:
        options["runtime_env"] = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}}
    return options


def build_app(config: ServeConfig, *, run: str | None = None, adapters: dict[str, str] | None = None):
    """The Ray Serve application: the gateway (ingress) bound to the engine deployment, when a model is served."""
    from ray import serve

    adapters = dict(adapters or {})
    plain = config.model_dump()
    engine = None
    if config.allow_base_model or not serves_base_model_only(config, run=run, adapters=adapters):
        engine = serve.deployment(EngineReplica, name="engine", max_ongoing_requests=config.ray.engine.capacity,
                                  autoscaling_config=autoscaling_config(config.ray, config.ray.engine),
                                  ray_actor_options=_replica_options(config, config.ray.engine))
        engine = engine.bind(plain, run, adapters)
    gateway = serve.deployment(serve.ingress()(Gateway), name="gateway",
                               max_ongoing_requests=config.ray.gateway.capacity,
                               autoscaling_config=autoscaling_config(config.ray, config.ray.gateway),
                               ray_actor_options=_replica_options(config, config.ray.gateway))
    return gateway.bind(engine, plain, run, adapters)


def app_builder(args: dict[str, str]):
    """For ``serve run kefu.serve.ray_app:app_builder config=kefu.yaml [run=RUN] [adapter=name=path,...]``."""
    config = load_config(args.get("config")).serve
    adapters = parse_adapters([a for a in args.get("adapter", "").split(",") if a])
    return build_app(config, run=args.get("run"), adapters=adapters)


def start(config: ServeConfig, *, run: str | None = None, adapters: dict[str, str] | None = None,
          num_cpus: int | None = None, blocking: bool = False) -> str:
    """Connect to Ray (``serve.ray.address``, else a local instance with ``num_cpus``), start Serve's HTTP proxy on
    ``serve.host:serve.port`` and deploy the application; returns its URL."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=config.ray.address, num_cpus=None if config.ray.address else num_cpus,
                 include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config, run=run, adapters=adapters), name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{config.host}:{config.port}"


def replicas() -> dict[str, dict[str, int]]:
    """Each deployment's target and running replicas now (Serve's own status)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    app = details.applications[APP_NAME]
    return {name: {"target": d.target_num_replicas,
                   "running": sum(r.state == "RUNNING" for r in d.replicas)}
            for name, d in app.deployments.items()}


def shutdown() -> None:
    """Stop the application, Serve and this process's Ray connection."""
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
