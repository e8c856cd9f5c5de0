"""Read and validate the shop's knowledge files (``examples/shop/SCHEMA.md``) into records.

Every problem is collected with its place — ``file:row field: what is wrong`` (CSV rows counted like a spreadsheet,
header = row 1; JSON entries by 0-based index) — and reported together, so one run shows every fix to make.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from kefu.kg.promotions import PROMOTION_TYPES, Promotion
from kefu.kg.records import (FAQ, PLAYBOOK_TYPES, RELATIONS, Order, OrderItem, Playbook, Policy, Product, Relation,
                             Shipment, ShipmentEvent)
from kefu.text.status import ORDER_STATUSES
from kefu.types import KefuError

KNOWN_FILES = ("products.csv", "relations.csv", "promotions.json", "policies.json", "playbooks.json", "orders.json",
               "faq.json")
MAX_REPORTED = 30


class Problems:
    """Collects validation errors; ``raise_if_any`` turns them into one KefuError listing them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_REPORTED]
            more = len(self.items) - len(shown)
            raise KefuError(f"import rejected, nothing was written ({len(self.items)} problem"
                            f"{'s' if len(self.items) != 1 else ''}):\n  " + "\n  ".join(shown)
                            + (f"\n  … and {more} more" if more else ""))


@dataclass
class Parsed:
    """Everything read from one import, before it touches the database."""

    files: list[Path] = field(default_factory=list)
    products: list[Product] | None = None
    relations: list[Relation] | None = None
    promotions: list[Promotion] | None = None
    policies: list[Policy] | None = None
    playbooks: list[Playbook] | None = None
    orders: list[Order] | None = None
    faq: list[FAQ] | None = None


def parse_datetime(value: Any, where: str, problems: Problems, name: str) -> datetime | None:
    """ISO 8601 with a UTC offset; a naive or unreadable time is a problem (times without zones are ambiguous)."""
    if not isinstance(value, str) or not value.strip():
        problems.add(where, f"field `{name}`: missing date-time (ISO 8601 with offset, e.g. 2026-11-01T00:00:00+08:00)")
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        problems.add(where, f"field `{name}`: bad date-time {value!r} (want ISO 8601, e.g. 2026-11-01T00:00:00+08:00)")
        return None
    if parsed.tzinfo is None:
        problems.add(where, f"field `{name}`: date-time {value!r} has no UTC offset (add e.g. +08:00)")
        return None
    return parsed


def _int(value: Any, where: str, problems: Problems, name: str, *, minimum: int | None = 0,
         required: bool = True) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.add(where, f"field `{name}`: missing")
        return None
    if isinstance(value, bool):
        problems.add(where, f"field `{name}`: must be an integer, got {value!r}")
        return None
    try:
        number = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        problems.add(where, f"field `{name}`: must be an integer (money in fen), got {value!r}")
        return None
    if isinstance(value, float) and value != number:
        problems.add(where, f"field `{name}`: must be an integer (money in fen), got {value!r}")
        return None
    if minimum is not None and number < minimum:
        kind = "negative" if minimum == 0 else f"below {minimum}"
        problems.add(where, f"field `{name}`: {kind} value {number} not allowed")
        return None
    return number


def _str(value: Any, where: str, problems: Problems, name: str, *, required: bool = True) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.add(where, f"field `{name}`: missing")
        return ""
    if not isinstance(value, str):
        problems.add(where, f"field `{name}`: must be text, got {value!r}")
        return ""
    return value.strip()


def _str_list(value: Any, where: str, problems: Problems, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(where, f"field `{name}`: must be a list of strings")
        return []
    return [v.strip() for v in value if v.strip()]


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split("|") if part.strip()]


def _read_json_list(path: Path, problems: Problems) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        problems.add(str(path), "not UTF-8 text")
        return []
    except json.JSONDecodeError as exc:
        problems.add(f"{path}:{exc.lineno}", f"not valid JSON: {exc.msg}")
        return []
    if not isinstance(data, list):
        problems.add(str(path), "the top level must be a JSON list")
        return []
    return data


def _read_csv(path: Path, required: tuple[str, ...], problems: Problems) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        problems.add(str(path), "not UTF-8 text")
        return []
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        problems.add(f"{path}:1", f"missing column(s) {', '.join(missing)} (have {', '.join(reader.fieldnames or [])})")
        return []
    return [(n, row) for n, row in enumerate(reader, start=2)]


# ------------------------------------------------------------------------------------------------------ products
PRODUCT_COLUMNS = ("sku", "name", "aliases", "category", "brand", "price_fen", "stock", "colors", "sizes", "material",
                   "style", "description")


def parse_products(path: Path, problems: Problems) -> list[Product]:
    """``products.csv``; optional extra column ``variant_stock`` as ``黑色/M:3|黑色/L:0``."""
    products: list[Product] = []
    first_row: dict[str, int] = {}
    for n, row in _read_csv(path, PRODUCT_COLUMNS, problems):
        where = f"{path}:{n}"
        sku = _str(row.get("sku"), where, problems, "sku")
        if sku in first_row:
            problems.add(where, f"field `sku`: duplicate SKU {sku} (first on row {first_row[sku]})")
            continue
        if sku:
            first_row[sku] = n
        price = _int(row.get("price_fen"), where, problems, "price_fen")
        stock = _int(row.get("stock"), where, problems, "stock")
        variant_stock: dict[str, int] = {}
        for part in _split(row.get("variant_stock")):
            key, _, units = part.rpartition(":")
            count = _int(units, where, problems, "variant_stock")
            if key and count is not None:
                variant_stock[key.strip()] = count
        name = _str(row.get("name"), where, problems, "name")
        if len(name) > 200:
            problems.add(where, f"field `name`: {len(name)} characters, at most 200")
        category = _str(row.get("category"), where, problems, "category")
        if not (sku and name and category and price is not None and stock is not None):
            continue
        products.append(Product(sku=sku, name=name, category=category, brand=(row.get("brand") or "").strip(),
                                price_fen=price, stock=stock, aliases=_split(row.get("aliases")),
                                colors=_split(row.get("colors")), sizes=_split(row.get("sizes")),
                                material=(row.get("material") or "").strip(), style=(row.get("style") or "").strip(),
                                description=(row.get("description") or "").strip(), variant_stock=variant_stock))
    return products


def parse_relations(path: Path, problems: Problems) -> list[Relation]:
    relations = []
    for n, row in _read_csv(path, ("sku", "relation", "target_sku"), problems):
        where = f"{path}:{n}"
        sku = _str(row.get("sku"), where, problems, "sku")
        target = _str(row.get("target_sku"), where, problems, "target_sku")
        relation = _str(row.get("relation"), where, problems, "relation")
        if relation and relation not in RELATIONS:
            problems.add(where, f"field `relation`: {relation!r} is not one of {', '.join(RELATIONS)}")
            continue
        if sku and target and sku == target:
            problems.add(where, f"field `target_sku`: {sku} cannot relate to itself")
            continue
        if sku and target and relation:
            relations.append(Relation(sku, relation, target, row=n))
    return relations


# ---------------------------------------------------------------------------------------------------- promotions
def promotion_from_dict(data: Any, where: str, problems: Problems) -> Promotion | None:
    """One promotion object → ``Promotion``, or None with the problems recorded."""
    if not isinstance(data, dict):
        problems.add(where, "must be a JSON object")
        return None
    before = len(problems.items)
    pid = _str(data.get("id"), where, problems, "id")
    where = f"{where} (promotion {pid})" if pid else where
    ptype = _str(data.get("type"), where, problems, "type")
    if ptype and ptype not in PROMOTION_TYPES:
        problems.add(where, f"field `type`: {ptype!r} is not one of {', '.join(PROMOTION_TYPES)}")
    starts = parse_datetime(data.get("starts_at"), where, problems, "starts_at")
    ends = parse_datetime(data.get("ends_at"), where, problems, "ends_at")
    if starts and ends and ends < starts:
        problems.add(where, f"field `ends_at`: {ends.isoformat()} is before starts_at {starts.isoformat()}")
    eligible = data.get("eligible") or {"all": True}
    if not isinstance(eligible, dict):
        problems.add(where, "field `eligible`: must be an object {all, skus, categories}")
        eligible = {}
    skus = _str_list(eligible.get("skus"), where, problems, "eligible.skus")
    categories = _str_list(eligible.get("categories"), where, problems, "eligible.categories")
    eligible_all = bool(eligible.get("all", False))
    if not eligible_all and not skus and not categories:
        problems.add(where, "field `eligible`: names no SKU or category and `all` is false, so nothing is eligible")
    kwargs: dict[str, Any] = {}
    if ptype == "full_reduction":
        tiers = data.get("tiers")
        if not isinstance(tiers, list) or not tiers:
            problems.add(where, "field `tiers`: a full_reduction needs a non-empty list of tiers")
            tiers = []
        parsed = []
        for k, tier in enumerate(tiers):
            tw = f"{where} tiers[{k}]"
            if not isinstance(tier, dict):
                problems.add(tw, "must be an object {threshold_fen, reduction_fen}")
                continue
            t = _int(tier.get("threshold_fen"), tw, problems, "threshold_fen", minimum=1)
            r = _int(tier.get("reduction_fen"), tw, problems, "reduction_fen", minimum=1)
            if t is not None and r is not None:
                if r > t:
                    problems.add(tw, f"field `reduction_fen`: {r} exceeds its threshold {t}")
                parsed.append((t, r))
        for k in range(1, len(parsed)):
            (t0, r0), (t1, r1) = parsed[k - 1], parsed[k]
            if t1 <= t0:
                problems.add(f"{where} tiers[{k}]", f"tiers unsorted or overlapping: threshold {t1} after {t0} "
                             "(list tiers by strictly increasing threshold)")
            elif r1 <= r0:
                problems.add(f"{where} tiers[{k}]", f"reduction {r1} at threshold {t1} is not larger than {r0} at the "
                             f"lower threshold {t0}")
        kwargs["tiers"] = tuple(parsed)
    elif ptype == "per_full_reduction":
        kwargs["per_threshold_fen"] = _int(data.get("per_threshold_fen"), where, problems, "per_threshold_fen", minimum=1)
        kwargs["per_reduction_fen"] = _int(data.get("per_reduction_fen"), where, problems, "per_reduction_fen", minimum=1)
        kwargs["cap_fen"] = _int(data.get("cap_fen"), where, problems, "cap_fen", minimum=1, required=False)
        if (kwargs["per_threshold_fen"] or 0) and (kwargs["per_reduction_fen"] or 0) > kwargs["per_threshold_fen"]:
            problems.add(where, "field `per_reduction_fen`: larger than per_threshold_fen")
    elif ptype == "discount":
        rate = _int(data.get("rate_percent"), where, problems, "rate_percent", minimum=1)
        if rate is not None and rate >= 100:
            problems.add(where, f"field `rate_percent`: {rate} is no discount (want 1–99, e.g. 85 for 八五折)")
        kwargs["rate_percent"] = rate
        kwargs["max_quantity"] = _int(data.get("max_quantity"), where, problems, "max_quantity", minimum=1,
                                      required=False)
    elif ptype == "gift":
        kwargs["threshold_fen"] = _int(data.get("threshold_fen"), where, problems, "threshold_fen")
        kwargs["gift_sku"] = _str(data.get("gift_sku"), where, problems, "gift_sku")
        kwargs["gift_quantity"] = _int(data.get("gift_quantity", 1), where, problems, "gift_quantity", minimum=1)
    elif ptype == "coupon":
        kwargs["threshold_fen"] = _int(data.get("threshold_fen"), where, problems, "threshold_fen")
        kwargs["reduction_fen"] = _int(data.get("reduction_fen"), where, problems, "reduction_fen", minimum=1)
        kwargs["code"] = _str(data.get("code"), where, problems, "code")
    stack_group = data.get("stack_group")
    if stack_group is not None and not isinstance(stack_group, str):
        problems.add(where, "field `stack_group`: must be text or null")
    if len(problems.items) > before:
        return None
    return Promotion(id=pid, name=_str(data.get("name"), where, problems, "name", required=False) or pid, type=ptype,
                     starts_at=starts, ends_at=ends, eligible_all=eligible_all, eligible_skus=frozenset(skus),  # type: ignore[arg-type]
                     eligible_categories=frozenset(categories), stack_group=stack_group or None,
                     exclusive=bool(data.get("exclusive", False)),
                     description=str(data.get("description") or ""), **kwargs)


def parse_promotions(path: Path, problems: Problems) -> list[Promotion]:
    promotions = []
    first: dict[str, int] = {}
    codes: dict[str, str] = {}
    for k, entry in enumerate(_read_json_list(path, problems)):
        promotion = promotion_from_dict(entry, f"{path}[{k}]", problems)
        if promotion is None:
            continue
        if promotion.id in first:
            problems.add(f"{path}[{k}]", f"field `id`: duplicate promotion id {promotion.id} (first at [{first[promotion.id]}])")
            continue
        if promotion.code and promotion.code in codes:
            problems.add(f"{path}[{k}]", f"field `code`: coupon code {promotion.code} also used by {codes[promotion.code]}")
            continue
        first[promotion.id] = k
        if promotion.code:
            codes[promotion.code] = promotion.id
        promotions.append(promotion)
    return promotions


# ---------------------------------------------------------------------------------------------- policies, playbooks
def _json_objects(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    """``(where, object)`` for each item of a JSON list file; an item that is not an object is a problem."""
    for k, data in enumerate(_read_json_list(path, problems)):
        where = f"{path}[{k}]"
        if isinstance(data, dict):
            yield where, data
        else:
            problems.add(where, "must be a JSON object")


def parse_policies(path: Path, problems: Problems) -> list[Policy]:
    policies = []
    seen: set[str] = set()
    for where, data in _json_objects(path, problems):
        before = len(problems.items)
        category = _str(data.get("category"), where, problems, "category")
        if category in seen:
            problems.add(where, f"field `category`: duplicate policy for {category}")
        seen.add(category)
        days = {name: _int(data.get(name, 0), where, problems, name) for name in ("return_days", "exchange_days",
                                                                                   "repair_days")}
        conditions = _str_list(data.get("conditions"), where, problems, "conditions")
        exceptions = _str_list(data.get("exceptions"), where, problems, "exceptions")
        if len(problems.items) > before:
            continue
        policies.append(Policy(category=category, seven_day_no_reason=bool(data.get("seven_day_no_reason", False)),
                               conditions=conditions, exceptions=exceptions,
                               shipping_paid_by=str(data.get("shipping_paid_by") or ""), **days))  # type: ignore[arg-type]
    return policies


def parse_playbooks(path: Path, problems: Problems) -> list[Playbook]:
    playbooks = []
    seen: set[str] = set()
    for where, data in _json_objects(path, problems):
        before = len(problems.items)
        ptype = _str(data.get("type"), where, problems, "type")
        if ptype and ptype not in PLAYBOOK_TYPES:
            problems.add(where, f"field `type`: {ptype!r} is not one of {', '.join(PLAYBOOK_TYPES)}")
        if ptype in seen:
            problems.add(where, f"field `type`: duplicate playbook {ptype}")
        seen.add(ptype)
        steps = _str_list(data.get("steps"), where, problems, "steps")
        if not steps:
            problems.add(where, "field `steps`: a playbook needs at least one step")
        allowed = _str_list(data.get("allowed_promises"), where, problems, "allowed_promises")
        forbidden = _str_list(data.get("forbidden_promises"), where, problems, "forbidden_promises")
        hours = _int(data.get("escalate_after_hours"), where, problems, "escalate_after_hours", required=False)
        if len(problems.items) > before:
            continue
        playbooks.append(Playbook(ptype, steps, allowed, forbidden, hours))
    return playbooks


# --------------------------------------------------------------------------------------------------------- orders
def order_from_dict(data: Any, where: str, problems: Problems) -> Order | None:
    """One order object (schema shape; also what an HTTP order service returns) → ``Order``."""
    if not isinstance(data, dict):
        problems.add(where, "must be a JSON object")
        return None
    before = len(problems.items)
    order_no = _str(data.get("order_no"), where, problems, "order_no")
    if order_no and not (len(order_no) == 16 and order_no.isdigit()):
        problems.add(where, f"field `order_no`: {order_no!r} is not 16 digits")
    where = f"{where} (order {order_no})" if order_no else where
    customer = _str(data.get("customer_id"), where, problems, "customer_id")
    created = parse_datetime(data.get("created_at"), where, problems, "created_at")
    status = _str(data.get("status"), where, problems, "status")
    if status and status not in ORDER_STATUSES:
        problems.add(where, f"field `status`: {status!r} is not one of {'|'.join(ORDER_STATUSES)}")
    items = []
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.add(where, "field `items`: an order needs a non-empty list of items")
        raw_items = []
    for k, item in enumerate(raw_items):
        iw = f"{where} items[{k}]"
        if not isinstance(item, dict):
            problems.add(iw, "must be an object {sku, quantity, unit_price_fen}")
            continue
        sku = _str(item.get("sku"), iw, problems, "sku")
        quantity = _int(item.get("quantity"), iw, problems, "quantity", minimum=1)
        price = _int(item.get("unit_price_fen"), iw, problems, "unit_price_fen")
        if sku and quantity is not None and price is not None:
            items.append(OrderItem(sku, quantity, price))
    paid = _int(data.get("paid_fen"), where, problems, "paid_fen")
    shipment = None
    raw = data.get("shipment")
    if raw is not None:
        if not isinstance(raw, dict):
            problems.add(where, "field `shipment`: must be an object or null")
        else:
            events = []
            for k, event in enumerate(raw.get("events") or []):
                ew = f"{where} shipment.events[{k}]"
                if not isinstance(event, dict):
                    problems.add(ew, "must be an object {time, status, location}")
                    continue
                when = parse_datetime(event.get("time"), ew, problems, "time")
                if when:
                    events.append(ShipmentEvent(when, str(event.get("status") or ""), str(event.get("location") or "")))
            events.sort(key=lambda e: e.time)
            shipment = Shipment(_str(raw.get("carrier"), where, problems, "shipment.carrier"),
                                _str(raw.get("tracking_no"), where, problems, "shipment.tracking_no"), events)
    if len(problems.items) > before:
        return None
    return Order(order_no, customer, created, status, items, paid, shipment)  # type: ignore[arg-type]


def parse_orders(path: Path, problems: Problems) -> list[Order]:
    orders = []
    first: dict[str, int] = {}
    for k, entry in enumerate(_read_json_list(path, problems)):
        order = order_from_dict(entry, f"{path}[{k}]", problems)
        if order is None:
            continue
        if order.order_no in first:
            problems.add(f"{path}[{k}]", f"field `order_no`: duplicate order {order.order_no} (first at [{first[order.order_no]}])")
            continue
        first[order.order_no] = k
        orders.append(order)
    return orders


def parse_faq(path: Path, problems: Problems) -> list[FAQ]:
    faq = []
    for where, data in _json_objects(path, problems):
        question = _str(data.get("question"), where, problems, "question")
        answer = _str(data.get("answer"), where, problems, "answer")
        if question and answer:
            faq.append(FAQ(question, answer, str(data.get("intent") or "")))
    return faq


PARSERS: dict[str, tuple[str, Callable[[Path, Problems], list]]] = {
    "products.csv": ("products", parse_products), "relations.csv": ("relations", parse_relations),
    "promotions.json": ("promotions", parse_promotions), "policies.json": ("policies", parse_policies),
    "playbooks.json": ("playbooks", parse_playbooks), "orders.json": ("orders", parse_orders),
    "faq.json": ("faq", parse_faq),
}


def collect_files(paths: tuple[Path, ...]) -> list[Path]:
    """Folders contribute the known files they hold; a file must be one of the known names."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [path / name for name in KNOWN_FILES if (path / name).is_file()]
            if not found:
                raise KefuError(f"{path}: no knowledge files here (looked for {', '.join(KNOWN_FILES)})")
            files.extend(found)
        elif path.is_file():
            if path.name not in PARSERS:
                raise KefuError(f"{path}: unknown knowledge file name (want one of {', '.join(KNOWN_FILES)})")
            files.append(path)
        else:
            raise KefuError(f"{path}: no such file or folder")
    names = [f.name for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise KefuError(f"more than one {', '.join(dupes)} in one import: import them one at a time")
    return files


def parse_files(files: list[Path], problems: Problems) -> Parsed:
    parsed = Parsed(files=list(files))
    for path in files:
        attr, parser = PARSERS[path.name]
        setattr(parsed, attr, parser(path, problems))
    return parsed
