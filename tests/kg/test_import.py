"""Importing the shop's knowledge: the sample shop, every validation error (file + row/field), atomicity, version."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kefu.kg.store import EMPTY_VERSION, KnowledgeGraph
from kefu.safety import audit
from kefu.types import KefuError

from .conftest import AT

REPO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _edit_csv(path: Path, fn) -> None:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    fn(rows)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)


def test_import_fixture_shop_counts_version_and_audit(shop_dir):
    kg = KnowledgeGraph.open()
    assert kg.version == EMPTY_VERSION
    report = kg.import_path(shop_dir)
    assert report.counts == {"products": 8, "relations": 3, "promotions": 7, "policies": 3, "playbooks": 5,
                             "orders": 3, "faq": 3}
    assert kg.version == report.version != EMPTY_VERSION
    assert kg.product("SL-10001").colors == ["黑色", "藏青", "曜石灰"]
    assert [p.id for p in kg.promotions(AT)] == ["P001", "P002", "P003", "P004", "P005"]
    assert kg.policy("袜子").seven_day_no_reason is False and kg.policy("帐篷").category == "*"
    assert kg.playbook("lost").escalate_after_hours == 24
    assert kg.order("2026111012345678").shipment.tracking_no == "SF1234567890123"
    assert [o.order_no for o in kg.orders_of("C0001")] == ["2026111199990000", "2026111012345678"]
    entry = list(audit.entries())[-1]
    assert entry["action"] == "kg.import" and entry["data_digest"] == report.digest
    assert entry["details"]["counts"]["products"] == 8 and audit.verify().ok


def test_version_changes_with_catalogue_not_with_orders(shop_dir):
    kg = KnowledgeGraph.open()
    v1 = kg.import_path(shop_dir).version
    assert kg.import_path(shop_dir / "orders.json").version == v1
    _edit_csv(shop_dir / "products.csv", lambda rows: rows[0].update(price_fen="55900"))
    v2 = kg.import_path(shop_dir / "products.csv").version
    assert v2 != v1 and kg.product("SL-10001").price_fen == 55900  # snapshot refreshed


def test_import_upserts_and_replace_empties(shop_dir, tmp_path):
    kg = KnowledgeGraph.open()
    kg.import_path(shop_dir)
    extra = tmp_path / "more" / "products.csv"
    extra.parent.mkdir()
    lines = (shop_dir / "products.csv").read_text(encoding="utf-8").splitlines()
    extra.write_text("\n".join([lines[0], lines[1].replace("SL-10001", "SL-20001")]) + "\n", encoding="utf-8")
    kg.import_path(extra)
    assert len(kg.products()) == 9
    kg.import_path(shop_dir, replace=True)
    assert len(kg.products()) == 8 and kg.product("SL-20001") is None


def test_sample_shop_imports_when_present():
    if not (REPO_SHOP / "products.csv").exists():
        pytest.skip("examples/shop/products.csv not generated yet")
    kg = KnowledgeGraph.open()
    report = kg.import_path(REPO_SHOP)
    assert report.counts["products"] >= 50
    assert kg.policy("*") is not None
    assert {p.type for p in kg.promotions()} >= {"full_reduction", "per_full_reduction", "discount", "coupon"}


@pytest.mark.parametrize("case, edit, message", [
    ("unknown SKU in a promotion", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[2]["eligible"].update(
        skus=["SL-99999"])), r"promotions\.json\[2\] \(promotion P003\): field `eligible.skus`: unknown SKU SL-99999"),
    ("unknown gift SKU", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[3].update(gift_sku="SL-00000")),
     r"promotions\.json\[3\] \(promotion P004\): field `gift_sku`: unknown SKU SL-00000"),
    ("unsorted tiers", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[0].update(tiers=list(reversed(
        ps[0]["tiers"])))), r"promotions\.json\[0\] \(promotion P001\) tiers\[1\]: tiers unsorted or overlapping"),
    ("overlapping tiers", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[0]["tiers"].append(
        {"threshold_fen": 60000, "reduction_fen": 15000})), r"tiers\[2\]: tiers unsorted or overlapping"),
    ("negative price", lambda d: _edit_csv(d / "products.csv", lambda rows: rows[2].update(price_fen="-100")),
     r"products\.csv:4: field `price_fen`: negative value -100"),
    ("price not in fen", lambda d: _edit_csv(d / "products.csv", lambda rows: rows[0].update(price_fen="599.5")),
     r"products\.csv:2: field `price_fen`: must be an integer"),
    ("bad date", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[1].update(starts_at="2026-13-01")),
     r"promotions\.json\[1\] \(promotion P002\): field `starts_at`: bad date-time"),
    ("naive date", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[1].update(ends_at="2026-11-30T23:59:59")),
     r"field `ends_at`: .*no UTC offset"),
    ("ends before starts", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[4].update(
        ends_at="2026-09-01T00:00:00+08:00")), r"\[4\] \(promotion P005\): field `ends_at`: .* is before starts_at"),
    ("duplicate SKU", lambda d: _edit_csv(d / "products.csv", lambda rows: rows[5].update(sku="SL-10002")),
     r"products\.csv:7: field `sku`: duplicate SKU SL-10002 \(first on row 3\)"),
    ("unknown promotion type", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[0].update(type="bogo")),
     r"field `type`: 'bogo' is not one of"),
    ("discount rate", lambda d: _edit_json(d / "promotions.json", lambda ps: ps[2].update(rate_percent=120)),
     r"field `rate_percent`: 120 is no discount"),
    ("order number", lambda d: _edit_json(d / "orders.json", lambda os_: os_[0].update(order_no="123")),
     r"orders\.json\[0\]: field `order_no`: '123' is not 16 digits"),
    ("order status", lambda d: _edit_json(d / "orders.json", lambda os_: os_[1].update(status="丢了")),
     r"orders\.json\[1\] \(order 2026110511112222\): field `status`"),
    ("relation kind", lambda d: (d / "relations.csv").write_text("sku,relation,target_sku\nSL-10001,likes,SL-10002\n",
                                                                 encoding="utf-8"), r"relations\.csv:2: field `relation`"),
    ("relation to an unknown SKU", lambda d: (d / "relations.csv").write_text(
        "sku,relation,target_sku\nSL-10001,compatible-with,SL-10002\nSL-10001,alternative-to,SL-77777\n",
        encoding="utf-8"), r"relations\.csv:3: field `target_sku`: unknown SKU SL-77777"),
    ("missing column", lambda d: (d / "products.csv").write_text("sku,name\nSL-1,x\n", encoding="utf-8"),
     r"products\.csv:1: missing column\(s\) aliases, category"),
    ("broken JSON", lambda d: (d / "policies.json").write_text("[{", encoding="utf-8"), r"policies\.json:1: not valid JSON"),
    ("playbook type", lambda d: _edit_json(d / "playbooks.json", lambda ps: ps[0].update(type="flood")),
     r"playbooks\.json\[0\]: field `type`: 'flood'"),
])
def test_each_import_error_names_file_and_row_and_writes_nothing(shop_dir, case, edit, message):
    kg = KnowledgeGraph.open()
    edit(shop_dir)
    with pytest.raises(KefuError, match=message):
        kg.import_path(shop_dir)
    assert kg.products() == [] and kg.version == EMPTY_VERSION  # all or nothing


def test_failed_import_leaves_previous_state_untouched(shop_dir):
    kg = KnowledgeGraph.open()
    version = kg.import_path(shop_dir).version
    _edit_csv(shop_dir / "products.csv", lambda rows: rows[0].update(price_fen="1"))
    _edit_json(shop_dir / "promotions.json", lambda ps: ps[0]["eligible"].update(skus=["SL-404"], all=False))
    with pytest.raises(KefuError, match="2 problems|unknown SKU SL-404"):
        kg.import_path(shop_dir)
    assert kg.version == version and kg.product("SL-10001").price_fen == 59900


def test_all_problems_reported_at_once(shop_dir):
    _edit_csv(shop_dir / "products.csv", lambda rows: (rows[0].update(price_fen="-1"), rows[1].update(stock="x")))
    with pytest.raises(KefuError) as info:
        KnowledgeGraph.open().import_path(shop_dir)
    assert "products.csv:2" in str(info.value) and "products.csv:3" in str(info.value)


def test_path_errors(tmp_path):
    kg = KnowledgeGraph.open()
    with pytest.raises(KefuError, match="no such file"):
        kg.import_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KefuError, match="no knowledge files"):
        kg.import_path(tmp_path / "empty")
    odd = tmp_path / "stuff.csv"
    odd.write_text("a\n", encoding="utf-8")
    with pytest.raises(KefuError, match="unknown knowledge file name"):
        kg.import_path(odd)


def test_promotion_referencing_a_stored_sku_imports_alone(shop_dir):
    kg = KnowledgeGraph.open()
    kg.import_path(shop_dir / "products.csv")
    report = kg.import_path(shop_dir / "promotions.json")
    assert report.counts == {"promotions": 7}


def test_default_url_is_under_kefu_home(kefu_home):
    kg = KnowledgeGraph.open()
    assert str(kefu_home) in kg.url and kg.url.startswith("sqlite:///")


def test_schema_compiles_for_postgresql():
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from kefu.kg.store import Base

    for table in Base.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
        assert table.name in ddl
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    assert "JSON" in str(CreateTable(Base.metadata.tables["kg_products"]).compile(dialect=postgresql.dialect()))


def test_bad_url_is_a_clear_error():
    with pytest.raises(KefuError, match="cannot open the knowledge graph at nosuchdb://"):
        KnowledgeGraph.open("nosuchdb://x")


def test_version_is_content_addressed(shop_dir):
    first = KnowledgeGraph.open()
    v1 = first.import_path(shop_dir).version
    assert first.import_path(shop_dir).version == v1  # same content, same version
    _edit_json(shop_dir / "policies.json", lambda ps: ps[1]["conditions"].append("附件齐全"))
    v2 = first.import_path(shop_dir / "policies.json").version
    assert v2 != v1 and "附件齐全" in first.policy("冲锋衣").conditions


def test_replacing_products_cannot_orphan_stored_promotions(shop_dir, tmp_path):
    kg = KnowledgeGraph.open()
    kg.import_path(shop_dir)
    lines = (shop_dir / "products.csv").read_text(encoding="utf-8").splitlines()
    smaller = tmp_path / "s" / "products.csv"
    smaller.parent.mkdir()
    smaller.write_text("\n".join(line for line in lines if "SL-10006" not in line) + "\n", encoding="utf-8")
    with pytest.raises(KefuError, match="stored promotion P004: refers to SKU SL-10006"):
        kg.import_path(smaller, replace=True)
    assert kg.product("SL-10006") is not None
