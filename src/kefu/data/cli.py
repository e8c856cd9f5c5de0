"""CLI commands of the data stage: ``kefu prepare`` and ``kefu mask``; `register` adds them to the root app."""

from __future__ import annotations

import codecs
import io
import os
import sys
from pathlib import Path
from typing import List, Literal, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from kefu.config import load_config
from kefu.data.config import FORMATS
from kefu.data.pipeline import prepare
from kefu.safety.keys import authorize
from kefu.text.pii import mask_many
from kefu.types import KefuError

FormatName = Literal[FORMATS]  # a click choice: a bad --format is a usage error naming the choices
OnError = Literal["skip", "fail"]
FORMAT_HELP = "Input format: auto (detected per file), openai, sharegpt, alpaca, llamafactory, turns or txt."


def prepare_command(
    inputs: List[Path] = typer.Argument(..., help="Chat-log files or folders (JSON, JSONL, CSV/TSV, TXT)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for train/val/test.jsonl and the report."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml)."),
    format: Optional[FormatName] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
    on_error: Optional[OnError] = typer.Option(None, "--on-error", help="skip: bad records go to rejects.jsonl; "
                                                                    "fail: stop at the first one."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for splits and generated samples."),
    val_ratio: Optional[float] = typer.Option(None, "--val-ratio", help="Share of dialogues for validation."),
    test_ratio: Optional[float] = typer.Option(None, "--test-ratio", help="Share of dialogues for test."),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="products.csv: entity lexicons."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Do not generate tier-3 samples."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (0: auto, 1: none)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files",
                                        help="Prepare the rest when an input file cannot be read at all (empty, "
                                             "binary, wrong encoding, unknown format, no usable record) and list "
                                             "it under bad_files in report.json; by default such a file fails "
                                             "the run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Clean, mask, deduplicate, annotate, augment and split chat logs into training data."""
    overrides = {"prepare.format": format, "prepare.on_error": on_error, "prepare.seed": seed,
                 "prepare.val_ratio": val_ratio, "prepare.test_ratio": test_ratio, "prepare.workers": workers,
                 "prepare.catalogue": str(catalogue) if catalogue else None,
                 "prepare.augment": False if no_augment else None}
    cfg = load_config(config, overrides).prepare
    for path in inputs:  # before the progress bar starts
        if not path.exists():
            raise KefuError(f"{path}: no such file or folder")
    console = Console(stderr=True)
    if quiet:
        report = prepare(inputs, out, cfg, skip_bad_files=skip_bad_files)
    else:
        columns = (TextColumn("[bold]prepare"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[dialogues]} dialogues"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("prepare", total=None, dialogues=0)

            def on_progress(n: int, total: int, done: int) -> None:
                bar.update(task, advance=n, total=total, dialogues=done)

            report = prepare(inputs, out, cfg, progress=on_progress, skip_bad_files=skip_bad_files)
            bar.update(task, dialogues=report["kept"] + sum(report["filtered"].values()) + report["duplicates"])
        console.print(summary_table(report, out))
        for line in where_lines(report, out):
            console.print(line, markup=False, highlight=False)
        console.print(timing_line(report))
    if report["kept"] == 0:
        raise KefuError(f"nothing usable came out of {', '.join(map(str, inputs))}: {report['rejected']} rejected, "
                        f"{sum(report['filtered'].values())} filtered, {report['duplicates']} duplicates "
                        f"(see {out / 'rejects.jsonl'} and {out / 'report.md'})")


def summary_table(report: dict, out: Path) -> Table:
    """The end-of-run summary: where every record went, and what was written."""
    table = Table(title=f"kefu prepare → {out}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    filtered = sum(report["filtered"].values())
    rows = [("records in", report["records_in"]), ("kept", report["kept"]), ("rejected", report["rejected"]),
            ("filtered", filtered),
            *[(f"  {reason}", n) for reason, n in report["filtered"].items()],
            ("duplicates", report["duplicates"]),
            ("bad files (not read)", len(report.get("bad_files", []))),
            ("generated (tier 3)", report["generated"]["total"]),
            *[(f"{split}.jsonl", n) for split, n in report["splits"].items()],
            ("PII masked", sum(report["pii"].values()))]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def where_lines(report: dict, out: Path) -> list[str]:
    """Where every record that did not reach a split went, and which input files were not read."""
    filtered = sum(report["filtered"].values())
    lines = []
    if report["rejected"] or filtered:
        lines.append(f"lost: rejected {report['rejected']} (could not be read), filtered {filtered} (quality "
                     f"filters): one line each in {out / 'rejects.jsonl'} with file, line and reason")
    if report["duplicates"]:
        lines.append(f"not lost: duplicates {report['duplicates']}, the first copy of each was kept "
                     f"(per file in {out / 'report.json'} by_file)")
    for bad in report.get("bad_files", []):
        lines.append(f"bad file, not read: {bad['path']}: {bad['reason']}")
    for skipped in report.get("skipped_files", []):
        lines.append(f"skipped, no chat logs: {skipped['path']}: {skipped['reason']}")
    return lines


def timing_line(report: dict) -> str:
    elapsed = report.get("elapsed_s") or 0.0
    rate = report["records_in"] / elapsed if elapsed else 0.0
    line = f"{elapsed:.1f} s, {rate:,.0f} records/s, {report.get('workers', 1)} worker(s)"
    return line if report["reconciles"] else line + " — [bold red]COUNTS DO NOT RECONCILE[/]"


_MASK_BATCH = 1000  # lines masked together (Masker.mask_many) at most


def mask_command() -> None:
    """Mask PII in text read from stdin, one output line per input line (streaming)."""
    authorize("data:read")  # reads raw data, changes nothing: a check, no audit entry
    stdout = sys.stdout
    for lines in _line_batches(sys.stdin, _MASK_BATCH):
        texts: list[str] = []
        endings: list[str] = []
        for line in lines:
            ending = "\n" if line.endswith("\n") else ""
            text = line[:-1] if ending else line
            if text.endswith("\r"):
                text, ending = text[:-1], "\r\n"
            texts.append(text)
            endings.append(ending or "\n")
        stdout.write("".join([masked + ending for (masked, _), ending in zip(mask_many(texts), endings)]))
        stdout.flush()


def _line_batches(stream, size: int):
    """The lines of a text stream (each ending in "\\n" but maybe the last), in lists of at most ``size`` lines.

    Each list holds only lines that have already arrived: on a pipe or terminal the stream's file descriptor is
    read directly (os.read returns what is there), and every complete line of what was read is handed on before
    the next read waits, so an interactive ``kefu mask`` answers each line at once while a big file goes in
    batches. Streams without a descriptor (tests, in-memory) are read line by line. Lines break at "\\n" only,
    as on sys.stdin (a "\\r" stays in the line)."""
    try:
        fd = stream.fileno() if os.name == "posix" and isinstance(stream, io.TextIOWrapper) else None
    except (OSError, ValueError):  # io.UnsupportedOperation is an OSError
        fd = None
    if fd is None:
        batch: list[str] = []
        for line in stream:
            batch.append(line)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    decoder = codecs.getincrementaldecoder(stream.encoding or "utf-8")(stream.errors or "strict")
    rest = ""
    while True:
        data = os.read(fd, 1 << 16)
        parts = (rest + decoder.decode(data, final=not data)).split("\n")
        rest = parts.pop()
        lines = [part + "\n" for part in parts]
        if not data and rest:
            lines.append(rest)
        for i in range(0, len(lines), size):
            yield lines[i:i + size]
        if not data:
            return


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.command("prepare")(prepare_command)
    app.command("mask")(mask_command)
