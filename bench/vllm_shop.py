"""The shop question set (bench/shop_questions.py) answered by vLLM on a GPU, behind ``kefu serve --engine remote``.

For a lent GPU machine. Steps:

1. ``kefu.loop.export.vllm_adapter``: the run's adapter under the run's name, and the ``vllm serve`` command (base
   under ``--served-model-name`` = the run's base model, ``--enable-lora``, ``--max-lora-rank`` rounded up to a rank
   vLLM accepts, ``--lora-modules NAME=PATH``); DoRA runs are refused there.
2. that command, on 127.0.0.1 with ``--port``/``--max-model-len``/``--gpu-memory-utilization``, until ``/v1/models``
   lists the adapter;
3. bench/shop_questions.py with ``--run RUN --model NAME -- --engine remote --remote-url http://127.0.0.1:PORT``: the
   gateway (router, knowledge graph, verification) is kefu's, each full-path answer is vLLM's with the shop adapter,
   chosen by the request's model name;
4. with ``--write-docs``, the section "Shop question set on vLLM" of docs/benchmarks.md (the CPU section of
   shop_questions.py is left alone).

Refuses before doing anything when there is no NVIDIA GPU or vLLM is not installed (exit status 2).

    .venv/bin/python bench/vllm_shop.py --run RUN --out /tmp/vllm_shop.json --write-docs
    .venv/bin/python bench/vllm_shop.py --run RUN --out /tmp/q.json --limit 10 -- --server-clock  # shop_questions args
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def missing_gpu_stack() -> str | None:
    """Why this machine cannot run vLLM (no NVIDIA GPU, vllm not installed), or None when it can."""
    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip() if smi else ""
    if not gpus:
        return "no GPU: nvidia-smi finds no NVIDIA GPU (vLLM serves on a GPU; run this on a lent GPU machine)"
    if importlib.util.find_spec("vllm") is None:
        return f"vllm not installed in {sys.executable} (pip install vllm); GPU found: {gpus.splitlines()[0]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vllm(command: str, port: int, args, log: Path) -> subprocess.Popen:
    """The exported ``vllm serve`` command on 127.0.0.1:PORT, until ``/v1/models`` answers (or it exits)."""
    argv = shlex.split(command) + ["--host", "127.0.0.1", "--port", str(port), "--max-model-len",
                                   str(args.max_model_len), "--gpu-memory-utilization", str(args.gpu_memory)]
    print("starting:", " ".join(argv), flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
                served = [m["id"] for m in json.loads(resp.read().decode("utf-8"))["data"]]
                print(f"vllm serves {served}", flush=True)
                return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            time.sleep(2.0)
    stop(proc)
    raise RuntimeError(f"vllm serve not ready after {args.startup_timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """The process group this script started (vLLM starts engine workers of its own)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def gpu_line() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return out.splitlines()[0] if out else "unknown GPU"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = "python bench/vllm_shop.py " + " ".join(argv)
    bench_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, bench_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished training run (folder or name under $KEFU_HOME/runs)")
    parser.add_argument("--out", type=Path, required=True, help="per-question results (JSON)")
    parser.add_argument("--export-dir", type=Path, help="where the vLLM export goes (default: a temp folder)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory", type=float, default=0.85, help="vllm --gpu-memory-utilization")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds for vLLM to be ready")
    parser.add_argument("--limit", type=int, help="ask only the first N questions (smoke runs)")
    parser.add_argument("--write-docs", action="store_true", help="write the section in docs/benchmarks.md")
    args = parser.parse_args(argv)

    why = missing_gpu_stack()
    if why:
        print(f"vllm_shop: refused: {why}", file=sys.stderr)
        return 2

    from kefu.artifacts.run import TrainRun
    from kefu.loop import export  # deferred: heavy (torch)

    run = TrainRun.named(args.run).require_finished().path.resolve()
    name = run.name  # `kefu serve --run RUN` serves the run's adapter under this name: vLLM must use the same one
    export_dir = args.export_dir or Path(tempfile.mkdtemp(prefix="kefu-vllm-"))
    exported = export.vllm_adapter(run, export_dir, name=name)
    port = free_port()
    vllm = start_vllm(exported["command"], port, args, export_dir / "vllm.log")
    try:
        sys.path.insert(0, str(BENCH))
        import shop_questions

        questions_args = ["--run", str(run), "--model", name, "--out", str(args.out)] \
            + (["--limit", str(args.limit)] if args.limit else []) + bench_args \
            + ["--", "--engine", "remote", "--remote-url", f"http://127.0.0.1:{port}"]
        status = shop_questions.main(questions_args)
    finally:
        stop(vllm)
    report = json.loads(args.out.read_text(encoding="utf-8"))
    import vllm as vllm_package

    report.update(vllm_command=exported["command"], vllm_version=vllm_package.__version__, gpu=gpu_line(),
                  vllm_log=str(export_dir / "vllm.log"), command=command_line)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.write_docs:
        from _report import write_section

        section = shop_questions.docs_section(report).split("\n", 1)[1]  # its own heading replaced by ours
        write_section("vllm-shop", "\n".join([
            "## Shop question set on vLLM (`bench/vllm_shop.py`)", "",
            f"GPU: {report['gpu']}; vLLM {report['vllm_version']}: `{report['vllm_command']}`. kefu serve in front "
            f"of it with `--engine remote`; each full-path answer is vLLM's, with the adapter `{name}` chosen by "
            "the request's model name.", section]))
        print("docs/benchmarks.md: section 'Shop question set on vLLM' written")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
