"""deploy/: the docker-compose fleet (kefu replicas, PostgreSQL, Redis, nginx) names only what kefu has -- the state
environment kefu reads, ``kefu`` commands and options that exist, a balancer that reaches every replica -- and its
kefu.yaml is valid. Docker is not run here; this is what can be checked without it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import typer
import yaml

from kefu import state
from kefu.cli import app
from kefu.config import load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def interpolate(value: str) -> str:
    """Compose's ``${NAME:?message}``/``${NAME:-default}`` with a stand-in for each required secret."""
    return VARIABLE.sub(lambda m: f"secret-{m.group(1).lower()}", value)


def replicas(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items() if list(s.get("command", []))[:2] == ["kefu", "serve"]}


def kefu_variables() -> set[str]:
    """Every ``KEFU_*`` name written as a string in kefu's source: the environment kefu can read."""
    names = set()
    for path in (REPO / "src" / "kefu").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(re.findall(r"\bKEFU_[A-Z0-9_]+\b", node.value))
    return names


def test_the_fleet_is_replicas_a_database_a_cache_and_a_balancer():
    services = compose()["services"]
    fleet = replicas(services)
    assert len(fleet) >= 3
    assert services["db"]["image"].startswith("postgres:") and services["cache"]["image"].startswith("redis:")
    assert services["lb"]["image"].startswith("nginx:") and set(services["lb"]["depends_on"]) == set(fleet)
    for service in fleet.values():
        assert set(service["depends_on"]) == {"db", "cache"}  # the state is up before a replica opens it


def test_every_kefu_variable_the_fleet_uses_is_one_kefu_reads():
    known = kefu_variables()
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"\b(KEFU_[A-Z0-9_]+)\s*:", text)) | {m.group(1) for m in VARIABLE.finditer(text)
                                                                 if m.group(1).startswith("KEFU_")}
    assert {state.BACKEND_ENV, state.DATABASE_URL_ENV, state.REDIS_URL_ENV, state.REDIS_PREFIX_ENV} <= used
    assert used - known == set(), f"kefu reads no such variable: {sorted(used - known)}"


def test_every_replica_is_on_the_same_shared_backend(monkeypatch):
    services = compose()["services"]
    environments = [{k: interpolate(str(v)) for k, v in s["environment"].items()} for s in replicas(services).values()]
    assert all(env == environments[0] for env in environments)  # one state, one pepper for all
    for name, value in environments[0].items():
        monkeypatch.setenv(name, value)
    state.configure(None)
    current = state.settings()
    assert current.backend == "postgres" and state.is_shared()
    database, cache = urlparse(current.database_url), urlparse(state.redis_url())
    assert database.scheme == "postgresql+psycopg" and database.hostname == "db" and database.path == "/kefu"
    assert cache.scheme == "redis" and cache.hostname == "cache"
    assert services["db"]["environment"]["POSTGRES_DB"] == "kefu"
    assert database.username == services["db"]["environment"]["POSTGRES_USER"]


def _command(args: list[str]):
    """The (Typer-vendored click) command ``kefu <args>`` runs and the options it is given."""
    command = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"kefu has no command {name!r} in {args}"
        command = command.commands[name]
    return command, [a for a in rest if a.startswith("-")]


def test_every_kefu_command_the_fleet_runs_exists_with_its_options():
    commands = [s["command"] for s in compose()["services"].values() if list(s.get("command", []))[:1] == ["kefu"]]
    assert len(commands) >= 4  # the replicas and the one-off import
    for args in commands:
        command, options = _command(args[1:])
        known = {opt for param in command.params for opt in param.opts}
        assert set(options) <= known, f"{' '.join(args)}: no option {sorted(set(options) - known)}"


def test_the_balancer_reaches_every_replica_on_the_port_it_serves():
    services = compose()["services"]
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M))
    ports = {args[args.index("--port") + 1] for args in (s["command"] for s in replicas(services).values())}
    assert upstream == {(name, port) for name in replicas(services) for port in ports}
    listen = re.search(r"^\s*listen\s+(\d+)", conf, re.M).group(1)
    assert any(str(p).endswith(f":{listen}") for p in services["lb"]["ports"])
    assert "non_idempotent" not in conf  # a POST already sent (feedback) is never sent to a second replica


def test_the_replicas_kefu_yaml_is_valid_and_mounted_where_they_read_it():
    fleet = replicas(compose()["services"])
    for service in fleet.values():
        args = service["command"]
        mounted = {target: source for source, target, *_ in (v.split(":") for v in service["volumes"])}
        assert mounted[args[args.index("--config") + 1]] == "./kefu.yaml"
    try:
        config = load_config(DEPLOY / "kefu.yaml")
    finally:
        state.configure(None)
    assert config.serve.rate_limit_burst >= 1 and config.state.backend == "sqlite"  # the state comes from the env


@pytest.mark.parametrize("name", ["Dockerfile", ".env.example", "nginx.conf", "kefu.yaml"])
def test_the_files_the_fleet_names_exist(name):
    assert (DEPLOY / name).is_file()
