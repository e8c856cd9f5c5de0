"""The shop knowledge graph: products and their relations, promotions, after-sales policies, logistics playbooks,
demo orders and FAQ, stored through SQLAlchemy 2 in ``kefu.state.database_url("kg")``: SQLite under ``$KEFU_HOME`` by
default, the shared PostgreSQL database (schema kept by Alembic) with the postgres backend; any URL may be given.

Reads of the catalogue side go through an in-memory snapshot rebuilt only when ``version`` changes, so a chat turn
never scans tables; orders are read live (they change all the time) by primary key or index.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint, create_engine, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kefu.kg.importer import Parsed, Problems, collect_files, order_from_dict, parse_files, promotion_from_dict
from kefu.kg.promotions import Promotion
from kefu.kg.records import FAQ, Order, Playbook, Policy, Product, Relation
from kefu import state
from kefu.safety import audit
from kefu.safety.keys import acting_as, authorize
from kefu.state import database
from kefu.types import KefuError

EMPTY_VERSION = "0" * 16
VERSION_CHECK_S = 1.0  # how stale a snapshot of a shared (PostgreSQL) graph may be, at most
KNOWLEDGE_KINDS = ("products", "relations", "promotions", "policies", "playbooks", "faq")  # orders do not bump version


class Base(DeclarativeBase):
    pass


class ProductRow(Base):
    __tablename__ = "kg_products"
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64), index=True)
    brand: Mapped[str] = mapped_column(String(100), default="")
    price_fen: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict] = mapped_column(JSON)  # aliases, colors, sizes, material, style, description, variant_stock


class RelationRow(Base):
    __tablename__ = "kg_relations"
    __table_args__ = (UniqueConstraint("sku", "relation", "target_sku"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(64), index=True)
    relation: Mapped[str] = mapped_column(String(32))
    target_sku: Mapped[str] = mapped_column(String(64))


class PromotionRow(Base):
    __tablename__ = "kg_promotions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSON)


class PolicyRow(Base):
    __tablename__ = "kg_policies"
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict] = mapped_column(JSON)


class PlaybookRow(Base):
    __tablename__ = "kg_playbooks"
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[dict] = mapped_column(JSON)


class OrderRow(Base):
    __tablename__ = "kg_orders"
    order_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    tracking_no: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict] = mapped_column(JSON)


class FAQRow(Base):
    __tablename__ = "kg_faq"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    intent: Mapped[str] = mapped_column(String(64), default="")


class TicketRow(Base):
    """After-sales tickets and human hand-offs created by the demo order backend."""

    __tablename__ = "kg_tickets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    order_no: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict] = mapped_column(JSON)


class MetaRow(Base):
    __tablename__ = "kg_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass
class ImportReport:
    """What one import wrote: files, rows per kind, the new ``version``, the digest of the files, warnings."""

    files: list[str]
    counts: dict[str, int]
    version: str
    digest: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """The catalogue side of the graph in memory, for one ``version``."""

    version: str
    products: dict[str, Product]
    relations: dict[str, list[Relation]]
    promotions: list[Promotion]
    policies: dict[str, Policy]
    playbooks: dict[str, Playbook]
    faq: list[FAQ]
    cache: dict[str, Any] = field(default_factory=dict)  # derived structures (e.g. the entity linker) per version

    def policy(self, category: str) -> Policy | None:
        return self.policies.get(category) or self.policies.get("*")

    def related(self, sku: str) -> list[tuple[str, str, bool]]:
        reverse = self.cache.get("reverse_relations")
        if reverse is None:
            reverse = {}
            for rels in self.relations.values():
                for r in rels:
                    reverse.setdefault(r.target_sku, []).append(r)
            self.cache["reverse_relations"] = reverse
        return ([(r.relation, r.target_sku, True) for r in self.relations.get(sku, [])]
                + [(r.relation, r.sku, False) for r in reverse.get(sku, [])])


def default_url() -> str:
    """The knowledge graph of the state backend in force."""
    return state.database_url("kg")


def _product_row(p: Product) -> ProductRow:
    return ProductRow(sku=p.sku, name=p.name, category=p.category, brand=p.brand, price_fen=p.price_fen,
                      stock=p.stock, data={"aliases": p.aliases, "colors": p.colors, "sizes": p.sizes,
                                           "material": p.material, "style": p.style, "description": p.description,
                                           "variant_stock": p.variant_stock})


def _product(row: ProductRow) -> Product:
    d = row.data or {}
    return Product(sku=row.sku, name=row.name, category=row.category, brand=row.brand, price_fen=row.price_fen,
                   stock=row.stock, aliases=list(d.get("aliases") or []), colors=list(d.get("colors") or []),
                   sizes=list(d.get("sizes") or []), material=d.get("material") or "", style=d.get("style") or "",
                   description=d.get("description") or "", variant_stock=dict(d.get("variant_stock") or {}))


def _order(row: OrderRow) -> Order:
    problems = Problems()
    order = order_from_dict(row.data, f"kg_orders {row.order_no}", problems)
    problems.raise_if_any()
    return order  # type: ignore[return-value]


class KnowledgeGraph:
    """The shop's knowledge: import it, version it, read it. Thread-safe for reads (one engine, short sessions)."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._scratch: Path | None = None  # the private folder of a ``scratch()`` graph
        # on a shared database (another machine) the version is read at most once per VERSION_CHECK_S for a
        # snapshot: a turn reads the snapshot a dozen times; on SQLite the read is a file lookup and always fresh
        self._version_seen: tuple[str, float] | None = None

    @classmethod
    def open(cls, url: str | None = None) -> "KnowledgeGraph":
        """Open (creating the tables if needed) the graph at ``url``; default ``default_url()``
        (``sqlite:///$KEFU_HOME/kg.db`` unless the backend is postgres)."""
        url = url or default_url()
        try:
            engine = create_engine(url, future=True)
            database.ensure_schema(engine, Base.metadata)
        except (SQLAlchemyError, ImportError) as exc:
            raise KefuError(f"cannot open the knowledge graph at {url}: {exc}") from exc
        return cls(engine, url)

    @classmethod
    def scratch(cls) -> "KnowledgeGraph":
        """A throwaway graph in a new private temporary SQLite file, removed by ``close()``: for a process that
        needs a shop folder's facts for itself (training as you serve, an evaluation). Importing into it changes
        no shared state, so it needs no ``kg:write``; it cannot be pointed at another database."""
        folder = Path(tempfile.mkdtemp(prefix="kefu-kg-"))
        graph = cls.open(f"sqlite:///{folder / 'kg.db'}")
        graph._scratch = folder
        return graph

    def close(self) -> None:
        self.engine.dispose()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    # -------------------------------------------------------------------------------------------------- import
    def import_path(self, *paths: Path, replace: bool = False) -> ImportReport:
        """Validate and import knowledge files (folders or files), all or nothing, in one transaction.

        Rows with the key of an existing row replace it (SKU, promotion id, category, playbook type, order number);
        ``replace=True`` first empties the tables of the kinds being imported. Every problem — unknown SKU in a
        promotion, unsorted or overlapping tiers, negative price, bad dates, end before start, duplicate SKU … — is
        reported with its file and row/field, and nothing is written. Records an audit entry.

        Needs ``kg:write`` (``kefu.safety.keys.authorize``: ``$KEFU_KEY``, or the OS user on a fresh install) unless
        this is a ``scratch()`` graph; the audit entry names the key. A refused caller changes nothing.
        """
        if self._scratch is not None:
            return self._import(paths, replace)
        with acting_as(authorize("kg:write")):
            return self._import(paths, replace)

    def _import(self, paths: tuple[Path, ...], replace: bool) -> ImportReport:
        files = collect_files(tuple(Path(p) for p in paths))
        problems = Problems()
        parsed = parse_files(files, problems)
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        try:
            with Session(self.engine) as session, session.begin():
                warnings = self._cross_check(session, parsed, problems, replace)
                problems.raise_if_any()  # inside the transaction: raising rolls back, nothing is written
                counts = self._write(session, parsed, replace)
                version = self._version(session)
                if any(getattr(parsed, kind) is not None for kind in KNOWLEDGE_KINDS):
                    version = self._content_version(session)
                    session.merge(MetaRow(key="version", value=version))
                session.merge(MetaRow(key="imported_at", value=datetime.now(timezone.utc).isoformat()))
        except SQLAlchemyError as exc:
            raise KefuError(f"import failed and was rolled back: {exc}") from exc
        self._version_seen = None  # this process's own import shows at once
        report = ImportReport([str(f) for f in files], counts, version, digest.hexdigest(), warnings)

        audit.record("kg.import", self._safe_url(), digest=report.digest,
                     details={"files": report.files, "counts": counts, "version": version, "replace": replace})
        return report

    def _safe_url(self) -> str:
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except Exception:  # pragma: no cover - URL objects always render
            return "kg"

    def _cross_check(self, session: Session, parsed: Parsed, problems: Problems, replace: bool) -> list[str]:
        """References between files and to what is already stored: SKUs, categories, gift SKUs, order items."""
        warnings: list[str] = []
        existing = set() if (replace and parsed.products is not None) else set(session.scalars(select(ProductRow.sku)))
        stored_categories = set() if (replace and parsed.products is not None) else set(
            session.scalars(select(ProductRow.category).distinct()))
        known = existing | {p.sku for p in parsed.products or []}
        categories = stored_categories | {p.category for p in parsed.products or []}
        files = {f.name: f for f in parsed.files}
        for k, p in enumerate(parsed.promotions or []):
            where = f"{files['promotions.json']}[{k}] (promotion {p.id})"
            for sku in sorted(p.eligible_skus - known):
                problems.add(where, f"field `eligible.skus`: unknown SKU {sku}")
            for category in sorted(p.eligible_categories - categories):
                problems.add(where, f"field `eligible.categories`: no product in category {category}")
            if p.gift_sku and p.gift_sku not in known:
                problems.add(where, f"field `gift_sku`: unknown SKU {p.gift_sku}")
        for r in parsed.relations or []:
            for name, sku in (("sku", r.sku), ("target_sku", r.target_sku)):
                if sku not in known:
                    problems.add(f"{files['relations.csv']}:{r.row}", f"field `{name}`: unknown SKU {sku}")
        for k, o in enumerate(parsed.orders or []):
            for j, item in enumerate(o.items):
                if item.sku not in known:
                    problems.add(f"{files['orders.json']}[{k}] (order {o.order_no}) items[{j}]",
                                 f"field `sku`: unknown SKU {item.sku}")
        if replace and parsed.products is not None and parsed.promotions is None:
            for row in session.scalars(select(PromotionRow).order_by(PromotionRow.id)):
                gone = sorted(set(row.data.get("eligible", {}).get("skus") or []) - known)
                if row.data.get("gift_sku") and row.data["gift_sku"] not in known:
                    gone.append(row.data["gift_sku"])
                if gone:
                    problems.add(f"stored promotion {row.id}", f"refers to SKU {', '.join(gone)}, which this "
                                 "replacing import removes (import promotions.json together with products.csv)")
        for policy in parsed.policies or []:
            if policy.category != "*" and categories and policy.category not in categories:
                warnings.append(f"policies.json: no product in category {policy.category}")
        if parsed.policies is not None and not any(p.category == "*" for p in parsed.policies):
            stored_default = session.get(PolicyRow, "*") is not None and not replace
            if not stored_default:
                warnings.append("policies.json: no default policy (category \"*\"); categories without a policy "
                                "get no after-sales facts")
        return warnings

    def _write(self, session: Session, parsed: Parsed, replace: bool) -> dict[str, int]:
        counts: dict[str, int] = {}
        tables = {"products": ProductRow, "relations": RelationRow, "promotions": PromotionRow, "policies": PolicyRow,
                  "playbooks": PlaybookRow, "orders": OrderRow, "faq": FAQRow}
        for kind, table in tables.items():
            records = getattr(parsed, kind)
            if records is None:
                continue
            counts[kind] = len(records)
            if replace or kind == "faq":
                session.execute(delete(table))
            if kind == "products":
                for p in records:
                    session.merge(_product_row(p))
            elif kind == "relations":
                skus = {r.sku for r in records}
                if not replace and skus:
                    session.execute(delete(RelationRow).where(RelationRow.sku.in_(sorted(skus))))
                seen = set()
                for r in records:
                    if (r.sku, r.relation, r.target_sku) not in seen:
                        seen.add((r.sku, r.relation, r.target_sku))
                        session.add(RelationRow(sku=r.sku, relation=r.relation, target_sku=r.target_sku))
            elif kind == "promotions":
                for p in records:
                    session.merge(PromotionRow(id=p.id, type=p.type, data=p.to_dict()))
            elif kind == "policies":
                for p in records:
                    session.merge(PolicyRow(category=p.category, data=p.to_dict()))
            elif kind == "playbooks":
                for p in records:
                    session.merge(PlaybookRow(type=p.type, data=p.to_dict()))
            elif kind == "orders":
                for o in records:
                    session.merge(OrderRow(order_no=o.order_no, customer_id=o.customer_id,
                                           tracking_no=o.shipment.tracking_no if o.shipment else None,
                                           created_at=o.created_at.astimezone(timezone.utc).isoformat(),  # sortable
                                           data=o.to_dict()))
            elif kind == "faq":
                for f in records:
                    session.add(FAQRow(question=f.question, answer=f.answer, intent=f.intent))
            session.flush()
        return counts

    # ------------------------------------------------------------------------------------------------- version
    @staticmethod
    def _content_version(session: Session) -> str:
        """sha256 of every knowledge row in key order: the same catalogue always has the same version, any change
        (a price, a promotion window, a policy line) gives a new one. Orders and tickets are not part of it."""
        h = hashlib.sha256()
        queries = [select(ProductRow.sku, ProductRow.name, ProductRow.category, ProductRow.brand, ProductRow.price_fen,
                          ProductRow.stock, ProductRow.data).order_by(ProductRow.sku),
                   select(RelationRow.sku, RelationRow.relation, RelationRow.target_sku)
                   .order_by(RelationRow.sku, RelationRow.relation, RelationRow.target_sku),
                   select(PromotionRow.id, PromotionRow.data).order_by(PromotionRow.id),
                   select(PolicyRow.category, PolicyRow.data).order_by(PolicyRow.category),
                   select(PlaybookRow.type, PlaybookRow.data).order_by(PlaybookRow.type),
                   select(FAQRow.question, FAQRow.answer, FAQRow.intent).order_by(FAQRow.id)]
        for n, query in enumerate(queries):
            h.update(f"#{n}".encode())
            for row in session.execute(query):
                h.update(dumps(list(row)).encode("utf-8") + b"\n")
        return h.hexdigest()[:16]

    @staticmethod
    def _version(session: Session) -> str:
        row = session.get(MetaRow, "version")
        return row.value if row else EMPTY_VERSION

    @property
    def version(self) -> str:
        """Changes whenever products, relations, promotions, policies, playbooks or FAQ change (cache keys use it)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(MetaRow.value).where(MetaRow.key == "version")).scalar()
        return value or EMPTY_VERSION

    def _snapshot_version(self) -> str:
        """``version`` for ``snapshot``: re-read from a shared database at most once per ``VERSION_CHECK_S`` (an
        import elsewhere shows within that), from SQLite every time; this process's own imports show at once."""
        if self.engine.dialect.name == "sqlite":
            return self.version
        now = time.monotonic()
        seen = self._version_seen
        if seen is None or now - seen[1] >= VERSION_CHECK_S:
            seen = self._version_seen = (self.version, now)
        return seen[0]

    def snapshot(self) -> Snapshot:
        """The catalogue side in memory, reloaded only when ``version`` changed."""
        version = self._snapshot_version()
        current = self._snapshot
        if current is not None and current.version == version:
            return current
        with self._lock:
            if self._snapshot is not None and self._snapshot.version == version:
                return self._snapshot
            with Session(self.engine) as session:
                products = {row.sku: _product(row) for row in session.scalars(select(ProductRow).order_by(ProductRow.sku))}
                relations: dict[str, list[Relation]] = {}
                for row in session.scalars(select(RelationRow).order_by(RelationRow.id)):
                    relations.setdefault(row.sku, []).append(Relation(row.sku, row.relation, row.target_sku))
                problems = Problems()
                promotions = [promotion_from_dict(row.data, f"kg_promotions {row.id}", problems)
                              for row in session.scalars(select(PromotionRow).order_by(PromotionRow.id))]
                problems.raise_if_any()
                policies = {row.category: Policy(**row.data) for row in session.scalars(select(PolicyRow))}
                playbooks = {row.type: Playbook(**row.data) for row in session.scalars(select(PlaybookRow))}
                faq = [FAQ(row.question, row.answer, row.intent)
                       for row in session.scalars(select(FAQRow).order_by(FAQRow.id))]
            self._snapshot = Snapshot(version, products, relations, [p for p in promotions if p], policies,
                                      playbooks, faq)
            return self._snapshot

    # --------------------------------------------------------------------------------------------------- reads
    def product(self, sku: str) -> Product | None:
        return self.snapshot().products.get(sku)

    def products(self, *, category: str | None = None, brand: str | None = None,
                 skus: Iterable[str] | None = None) -> list[Product]:
        """Products filtered by category / brand / SKUs, in SKU order."""
        snap = self.snapshot()
        items: Iterable[Product] = ([snap.products[s] for s in sorted(set(skus)) if s in snap.products]
                                    if skus is not None else snap.products.values())
        return [p for p in items if (category is None or p.category == category) and (brand is None or p.brand == brand)]

    def relations(self, sku: str, relation: str | None = None) -> list[Relation]:
        return [r for r in self.snapshot().relations.get(sku, []) if relation is None or r.relation == relation]

    def related(self, sku: str) -> list[tuple[str, str, bool]]:
        """Relations in both directions: ``(relation, other_sku, forward)``; ``forward`` is False when ``sku`` is the
        target (e.g. for ``杖尖 accessory-of 登山杖``, the 登山杖 sees ``("accessory-of", 杖尖, False)``)."""
        return self.snapshot().related(sku)

    def promotions(self, at: datetime | None = None) -> list[Promotion]:
        """All promotions, or only those in force at ``at`` (timezone-aware), by id."""
        if at is not None and at.tzinfo is None:
            raise KefuError("promotions(at=...): `at` must be timezone-aware")
        return [p for p in self.snapshot().promotions if at is None or p.active(at)]

    def policy(self, category: str) -> Policy | None:
        """The category's after-sales policy, else the shop default (``"*"``), else None."""
        return self.snapshot().policy(category)

    def playbook(self, type: str) -> Playbook | None:
        return self.snapshot().playbooks.get(type)

    def faq(self) -> list[FAQ]:
        return list(self.snapshot().faq)

    def order(self, order_no: str) -> Order | None:
        """Any order by number — unscoped: customer-facing code must check ``customer_id`` (the tools do)."""
        with Session(self.engine) as session:
            row = session.get(OrderRow, order_no)
            return _order(row) if row else None

    def order_by_tracking(self, tracking_no: str) -> Order | None:
        with Session(self.engine) as session:
            row = session.scalars(select(OrderRow).where(OrderRow.tracking_no == tracking_no)).first()
            return _order(row) if row else None

    def orders_of(self, customer_id: str, limit: int = 10) -> list[Order]:
        """The customer's orders, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(OrderRow).where(OrderRow.customer_id == customer_id)
                                   .order_by(OrderRow.created_at.desc(), OrderRow.order_no).limit(limit))
            return [_order(r) for r in rows]

    def stats(self) -> dict[str, int]:
        snap = self.snapshot()
        with Session(self.engine) as session:
            orders = len(list(session.scalars(select(OrderRow.order_no))))
        return {"products": len(snap.products), "relations": sum(len(v) for v in snap.relations.values()),
                "promotions": len(snap.promotions), "policies": len(snap.policies), "playbooks": len(snap.playbooks),
                "faq": len(snap.faq), "orders": orders}


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True)
