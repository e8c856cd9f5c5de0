"""`kefu serve` CLI and the service builder: runs, adapters, clear errors."""

import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.artifacts.run import TrainRun
from kefu.serve.build import build_service, parse_adapters
from kefu.serve.config import ServeConfig
from kefu.serve.router import RouterModel
from kefu.types import KefuError


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--run", "--adapter", "--model", "--host", "--port", "--no-auth", "--engine", "--remote-url", "--kg"):
        assert flag in result.output
    assert "router" in result.output


def test_refuses_to_start_without_keys_or_public_no_auth(monkeypatch):
    monkeypatch.delenv("KEFU_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve"])
    assert isinstance(result.exception, KefuError) and "KEFU_API_KEY" in str(result.exception)
    result = CliRunner().invoke(app, ["serve", "--no-auth", "--host", "0.0.0.0"])
    assert isinstance(result.exception, KefuError) and "local development only" in str(result.exception)


def test_help_lists_the_speed_options_and_refuses_an_unknown_quantisation():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert "--quantize" in result.output and "--trim-vocab" in result.output and "--draft-tokens" in result.output
    result = CliRunner().invoke(app, ["serve", "--no-auth", "--quantize", "int4"])
    assert result.exit_code != 0
    assert "serve.quantize" in str(result.exception) and "int8-weight" in str(result.exception)


def test_remote_engine_needs_a_url(monkeypatch):
    with pytest.raises(KefuError, match="--remote-url"):
        build_service(ServeConfig(engine="remote", model="m"), kg=object())


def test_runs_and_adapters_resolve(tmp_path, kefu_home):
    run = kefu_home / "runs" / "shop-v1"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    TrainRun(run).write_record({"train": {"model": "smollm2-135m"}})  # as `kefu train` writes it
    assert TrainRun.named("shop-v1").path == run and TrainRun.named(str(run)).path == run
    service = build_service(ServeConfig(), run="shop-v1", engine=_Engine(), kg=object())
    assert service.base_model == "smollm2-135m"
    with pytest.raises(KefuError, match="no such run"):
        TrainRun.named("missing")
    (kefu_home / "runs" / "unfinished").mkdir()
    with pytest.raises(KefuError, match="no trained adapter"):
        build_service(ServeConfig(), run="unfinished", engine=_Engine(), kg=object())
    with pytest.raises(KefuError, match="name=path"):
        parse_adapters(["just-a-path"])
    with pytest.raises(KefuError, match="adapter_config.json not found"):
        parse_adapters([f"a={tmp_path}"])
    assert parse_adapters([f"a={run / 'adapter'}"]) == {"a": str(run / "adapter")}


class _Engine:
    name = "fake"

    def models(self):
        return ["base", "shop-v1"]


def test_build_service_with_injected_engine_uses_run_router(tmp_path, kefu_home):
    run = kefu_home / "runs" / "shop-v1"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    RouterModel.fit(["多少钱", "价格", "尺码推荐一下", "帮我推荐"], ["price_inquiry"] * 2 + ["size_recommendation"] * 2
                    ).save(run / "router.pkl")
    service = build_service(ServeConfig(model="base"), run="shop-v1", engine=_Engine())
    assert service.router.model is not None and service.models() == ["base", "shop-v1"]
    assert service.kg is not None and service.feedback is not None
