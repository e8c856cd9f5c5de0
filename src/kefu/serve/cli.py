"""CLI commands of the serve stage: ``kefu serve`` (the gateway) and ``kefu serve router fit|eval``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from kefu.artifacts.run import TrainRun
from kefu.config import load_config
from kefu.serve.build import build_service, parse_adapters, serves_base_model_only
from kefu.serve.gateway import Authenticator
from kefu.serve.ray_app import start as start_on_ray
from kefu.serve.registry_watch import RegistryWatcher
from kefu.serve.router import RouterModel, default_router_path, evaluate, load_training_turns
from kefu.types import KefuError

console = Console(stderr=True)
serve_app = typer.Typer(help="Serve the model: OpenAI-compatible API, web chat page, router, cache, feedback.")
router_app = typer.Typer(no_args_is_help=True, help="Fit and evaluate the light-path / full-model router.")
serve_app.add_typer(router_app, name="router")


@serve_app.callback(invoke_without_command=True)
def serve(ctx: typer.Context,
          run: Optional[str] = typer.Option(None, "--run", help="Training run (folder or name under $KEFU_HOME/runs)."),
          adapter: List[str] = typer.Option([], "--adapter", help="Extra LoRA adapter as name=path (repeatable)."),
          model: Optional[str] = typer.Option(None, "--model", help="Base model (default: the train stage's)."),
          host: Optional[str] = typer.Option(None, "--host"),
          port: Optional[int] = typer.Option(None, "--port"),
          no_auth: bool = typer.Option(False, "--no-auth", help="Accept requests without a key (local dev only)."),
          engine: Optional[str] = typer.Option(None, "--engine", help="local | remote"),
          remote_url: Optional[str] = typer.Option(None, "--remote-url", help="OpenAI-compatible server for remote."),
          kg: Optional[str] = typer.Option(None, "--kg", help="Knowledge graph URL (default under $KEFU_HOME)."),
          trim_vocab: Optional[str] = typer.Option(None, "--trim-vocab", help="vocab_trim.json (from `kefu export "
                                                   "--trim-vocab`): decode over the shop's tokens only (faster)."),
          quantize: Optional[str] = typer.Option(None, "--quantize", help="none | int8-weight (int8 weights, bf16 "
                                                 "activations: faster CPU decoding) | int8 (dynamic, lossy)."),
          draft_tokens: Optional[int] = typer.Option(None, "--draft-tokens", help="Prompt-lookup draft tokens "
                                                     "verified per decode step (0: off; greedy output unchanged)."),
          registry: bool = typer.Option(False, "--registry", help="Serve the registry's promoted adapter as model "
                                                                   "'shop', following promotions without restarts."),
          replies: Optional[str] = typer.Option(None, "--replies", help="The shop's past replies: an index file "
                                                "(`kefu kg replies build`) or prepared data (default: the run's)."),
          allow_base_model: bool = typer.Option(False, "--allow-base-model", help="Without --run, let the untuned "
                                                "base model answer customers (experiments only)."),
          ray: bool = typer.Option(False, "--ray", help="Run the gateway and the engine as Ray Serve deployments, "
                                   "autoscaled by serve.ray (needs the ray extra; serve.ray.address for a cluster)."),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml).")):
    """Start the serving gateway (API + web page at /). Requests choose an adapter by their `model` field."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from kefu.serve.app import create_app  # deferred: heavy (fastapi)

    cfg = load_config(config, {"serve.host": host, "serve.port": port, "serve.model": model, "serve.engine": engine,
                               "serve.remote_url": remote_url, "serve.kg_url": kg, "serve.trim_vocab": trim_vocab,
                               "serve.quantize": quantize, "serve.draft_tokens": draft_tokens,
                               "serve.auth": False if no_auth else None,
                               "serve.allow_base_model": True if allow_base_model else None,
                               "serve.replies": replies}).serve
    auth = Authenticator(enabled=cfg.auth)
    if cfg.auth and not auth.configured:
        raise KefuError("no API keys: set KEFU_API_KEY (comma separated) or create one with `kefu keys create`, "
                        "or pass --no-auth for local development")
    if not cfg.auth:
        if cfg.host not in ("127.0.0.1", "localhost", "::1"):
            raise KefuError(f"--no-auth is for local development only; refusing to listen on {cfg.host}")
        console.print("[yellow]warning:[/] --no-auth: every request is accepted (local development only)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    adapters = parse_adapters(adapter)
    if serves_base_model_only(cfg, run=run, adapters=adapters, registry=registry):
        console.print("[yellow]no trained run:[/] customers are answered from the knowledge graph, the shop's past "
                      "replies and a handoff to a human; the untuned base model does not answer them"
                      + (" — --allow-base-model: it does, for this experiment" if cfg.allow_base_model else
                         " (pass --run RUN, or --allow-base-model for experiments)"))
    if ray:
        if registry:
            raise KefuError("--registry with --ray: not supported (each engine replica would follow the registry on "
                            "its own); promote, then redeploy")
        console.print(f"kefu serving on Ray Serve at http://{cfg.host}:{cfg.port} (gateway and engine deployments, "
                      f"autoscaled by serve.ray)")
        start_on_ray(cfg, run=run, adapters=adapters, blocking=True)
        return
    service = build_service(cfg, run=run, adapters=adapters, registry=registry)
    if registry:
        watcher = RegistryWatcher(service.engine)
        watcher.start()
        console.print(f"following the adapter registry as model 'shop' (serving {watcher.version or 'nothing yet'})")
    app = create_app(service, auth=auth)
    console.print(f"kefu serving {', '.join(service.models())} on http://{cfg.host}:{cfg.port} (web chat at /)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


@router_app.command("fit")
def router_fit(data: Path = typer.Option(..., "--data", help="Prepared train.jsonl (meta.intents per user turn)."),
               target_share: float = typer.Option(0.3, "--target-share", min=0.0, max=1.0,
                                                  help="Share of turns the full model should get."),
               eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out jsonl for the curve."),
               run: Optional[str] = typer.Option(None, "--run", help="Save under this run (else $KEFU_HOME/router)."),
               out: Optional[Path] = typer.Option(None, "--out", help="Explicit output file (.pkl).")):
    """Fit the TF-IDF + logistic-regression router, calibrate its threshold, write the quality curve."""
    from sklearn.model_selection import train_test_split

    texts, intents = load_training_turns(data)
    if eval_data is not None:
        eval_texts, eval_intents = load_training_turns(eval_data)
        fit_texts, fit_intents = texts, intents
    else:
        fit_texts, eval_texts, fit_intents, eval_intents = train_test_split(texts, intents, test_size=0.2,
                                                                            random_state=0)
    model = RouterModel.fit(fit_texts, fit_intents, target_full_share=target_share)
    model.calibrate(eval_texts, target_share)  # threshold from held-out (traffic-like) scores, as RouteLLM does
    path = out or default_router_path(TrainRun.named(run).path if run else None)
    model.save(path)
    summary = evaluate(model, eval_texts, eval_intents, path.parent)
    console.print(f"router saved to {path}; threshold {model.threshold:.3f}; held-out: "
                  f"{summary['full_share']:.0%} to the full model, quality {summary['quality']:.3f}; curve: "
                  f"{path.parent / 'router_curve.json'}, {path.parent / 'router_curve.svg'}")
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "curve"}, ensure_ascii=False))


@router_app.command("eval")
def router_eval(data: Path = typer.Option(..., "--data", help="Held-out prepared jsonl."),
                model_path: Optional[Path] = typer.Option(None, "--model", help="Router file (default $KEFU_HOME)."),
                out_dir: Optional[Path] = typer.Option(None, "--out-dir")):
    """Write the quality-vs-%-full-model curve (JSON + SVG) of a fitted router on held-out data."""
    path = model_path or default_router_path()
    model = RouterModel.load(path)
    texts, intents = load_training_turns(data)
    summary = evaluate(model, texts, intents, out_dir or path.parent)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "curve"}, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.add_typer(serve_app, name="serve")
