"""CLI commands of the kg stage: ``kefu kg import|query|price``; `register` adds them to the root `kefu` app."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kefu.clock import parse_time, shop_now
from kefu.config import load_config
from kefu.kg.promotions import CartItem, price_cart
from kefu.kg.replies import TOKEN_MODES, ReplyIndex, stats as reply_stats
from kefu.kg.retrieval import retrieve
from kefu.kg.store import KnowledgeGraph
from kefu.text.numbers import format_fen as yuan
from kefu.types import KefuError

kg_app = typer.Typer(no_args_is_help=True, help="The shop knowledge graph: import it, query it, price carts exactly.")

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml).")
URL_OPTION = typer.Option(None, "--url", help="Database URL (default kg.url, else sqlite:///$KEFU_HOME/kg.db).")


def _open(config: Optional[Path], url: Optional[str]):
    cfg = load_config(config).kg
    return KnowledgeGraph.open(url or cfg.url), cfg


def parse_at(value: Optional[str]) -> datetime:
    """``--at`` (ISO 8601 with offset), else the shop's clock (``$KEFU_SHOP_TIME`` or now)."""
    return parse_time(value, "--at") if value else shop_now()


@kg_app.command("import")
def import_cmd(paths: list[Path] = typer.Argument(..., help="Folders or files (products.csv, promotions.json, …)."),
               replace: bool = typer.Option(False, "--replace", help="Empty the imported kinds' tables first."),
               config: Optional[Path] = CONFIG_OPTION, url: Optional[str] = URL_OPTION):
    """Validate and import knowledge files, all or nothing; every problem names its file, row and field."""
    kg, _ = _open(config, url)
    report = kg.import_path(*paths, replace=replace)
    out = Console()
    out.print(f"imported into {kg._safe_url()}", markup=False, soft_wrap=True)
    table = Table()
    table.add_column("kind")
    table.add_column("rows", justify="right")
    for kind, count in report.counts.items():
        table.add_row(kind, str(count))
    out.print(table)
    out.print(f"version {report.version}  digest {report.digest[:16]}…")
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}")


@kg_app.command("query")
def query_cmd(text: str = typer.Argument(..., help="A customer turn, e.g. 风行冲锋衣多少钱"),
              customer: Optional[str] = typer.Option(None, "--customer", help="Authenticated customer id."),
              at: Optional[str] = typer.Option(None, "--at", help="Time (ISO 8601 with offset; default now)."),
              as_json: bool = typer.Option(False, "--json", help="Print the Facts as JSON."),
              config: Optional[Path] = CONFIG_OPTION, url: Optional[str] = URL_OPTION):
    """Show the entities and facts retrieved for a turn, the prompt block, and the direct answer if any."""
    kg, cfg = _open(config, url)
    facts = retrieve(kg, text, customer_id=customer, at=parse_at(at), max_facts=cfg.max_facts,
                     faq_min_similarity=cfg.faq_min_similarity)
    out = Console()
    if as_json:
        out.print_json(json.dumps(facts.to_dict(), ensure_ascii=False))
        return
    entities = Table(title="entities")
    for column in ("type", "text", "value", "span"):
        entities.add_column(column)
    for e in facts.entities:
        entities.add_row(e["type"], e["text"], str(e["value"]), f"{e['start']}-{e['end']}")
    out.print(entities)
    table = Table(title="facts", show_lines=False)
    table.add_column("type")
    table.add_column("subject")
    table.add_column("fact", overflow="fold")
    for f in facts.facts:
        table.add_row(f["type"], f["subject"], f["text"])
    out.print(table)
    out.print("[bold]prompt block[/]")
    typer.echo(facts.prompt_block or "(no facts)")
    out.print("[bold]answer[/]")
    typer.echo(facts.answer or "(none — needs the model)")


@kg_app.command("price")
def price_cmd(cart: Path = typer.Option(..., "--cart", help="Cart JSON: [{sku, quantity}] or {items: [...]}"),
              at: Optional[str] = typer.Option(None, "--at", help="Time (ISO 8601 with offset; default now)."),
              coupon: list[str] = typer.Option([], "--coupon", help="Coupon code (repeatable)."),
              config: Optional[Path] = CONFIG_OPTION, url: Optional[str] = URL_OPTION):
    """Exact payable amount of a cart under the promotions in force, and which rules saved what."""
    when = parse_at(at)
    kg, _ = _open(config, url)
    items = load_cart(kg, cart)
    result = price_cart(items, kg.promotions(when), when, set(coupon))
    out = Console()
    table = Table(title=f"cart at {when.isoformat()}")
    for column in ("sku", "qty", "unit ¥", "line ¥", "after promotions ¥"):
        table.add_column(column, justify="right" if column != "sku" else "left")
    for item, line in zip(items, result.lines_fen):
        table.add_row(item.sku, str(item.quantity), yuan(item.unit_price_fen), yuan(item.quantity * item.unit_price_fen),
                      yuan(line))
    for gift in result.gifts:
        table.add_row(f"{gift.sku}（赠品）", str(gift.quantity), "0.00", "0.00", "0.00")
    out.print(table)
    for line in result.explanation:
        typer.echo(line)
    out.print(f"[bold]payable ¥{yuan(result.payable_fen)}[/] (total ¥{yuan(result.total_fen)}, saved "
              f"¥{yuan(result.saved_fen)})")


def load_cart(kg, path: Path):
    """A cart file → CartItems; prices and categories come from the graph unless the line gives them."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KefuError(f"{path}: cart file not found") from exc
    except json.JSONDecodeError as exc:
        raise KefuError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    lines = data.get("items") if isinstance(data, dict) else data
    if not isinstance(lines, list) or not lines:
        raise KefuError(f"{path}: want a non-empty list of {{sku, quantity}} (or {{\"items\": [...]}})")
    items = []
    for k, line in enumerate(lines):
        where = f"{path}[{k}]"
        if not isinstance(line, dict) or not isinstance(line.get("sku"), str):
            raise KefuError(f"{where}: want an object with a `sku`")
        product = kg.product(line["sku"])
        quantity = line.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise KefuError(f"{where}: field `quantity`: must be a positive integer, got {quantity!r}")
        price = line.get("unit_price_fen", product.price_fen if product else None)
        category = line.get("category", product.category if product else None)
        if price is None or category is None:
            raise KefuError(f"{where}: field `sku`: unknown SKU {line['sku']} (import the catalogue or give "
                            "unit_price_fen and category)")
        if not isinstance(price, int) or price < 0:
            raise KefuError(f"{where}: field `unit_price_fen`: must be a non-negative integer (fen), got {price!r}")
        items.append(CartItem(line["sku"], quantity, price, category))
    return items


replies_app = typer.Typer(no_args_is_help=True, help="The shop's own past replies: a BM25 index over (customer "
                          "context → agent reply) pairs of prepared logs.")
kg_app.add_typer(replies_app, name="replies")


@replies_app.command("build")
def replies_build_cmd(data: Path = typer.Argument(..., help="Prepared data: a folder (its train.jsonl) or a JSONL file."),
                      out: Path = typer.Option(..., "--out", help="Index file to write (.npz)."),
                      tokens: str = typer.Option("bigrams", "--tokens", help=f"{' | '.join(TOKEN_MODES)}."),
                      context_turns: int = typer.Option(2, "--context-turns", min=0,
                                                        help="Earlier messages keyed with lower weight."),
                      include_simulated: bool = typer.Option(False, "--include-simulated",
                                                             help="Also index tier-3 simulated dialogues.")):
    """Index every agent reply of DATA under the customer message it answered."""
    index = ReplyIndex.from_data(data, tokens=tokens, context_turns=context_turns,
                                 include_simulated=include_simulated)
    if not len(index):
        raise KefuError(f"{data}: no agent reply after a customer message to index")
    index.save(out)
    size = out.stat().st_size
    figures = ", ".join(f"{k} {v}" for k, v in reply_stats(index).items())
    Console().print(f"wrote {out} ({size / 1024:.0f} KiB): {figures}", markup=False, soft_wrap=True)


@replies_app.command("search")
def replies_search_cmd(index_file: Path = typer.Argument(..., help="Index built by `kefu kg replies build`."),
                       question: str = typer.Argument(..., help="The customer's message."),
                       k: int = typer.Option(5, "-k", "--top", min=1, help="How many replies."),
                       as_json: bool = typer.Option(False, "--json", help="Print the matches as JSON lines.")):
    """The past replies that best answer QUESTION, best first."""
    matches = ReplyIndex.load(index_file).search(question, k=k)
    out = Console()
    if as_json:
        for m in matches:
            typer.echo(json.dumps(m.to_dict(), ensure_ascii=False))
        return
    if not matches:
        out.print("no past reply shares a term with this question")
        return
    table = Table()
    for column in ("similarity", "score", "question", "reply", "dialogue"):
        table.add_column(column, justify="right" if column in ("similarity", "score") else "left")
    for m in matches:
        table.add_row(f"{m.similarity:.2f}", f"{m.score:.2f}", m.question, m.reply, f"{m.dialogue_id}#{m.turn}")
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.add_typer(kg_app, name="kg")
