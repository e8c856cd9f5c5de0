"""The knowledge graph on the shared PostgreSQL database: the sample shop imports to the same content as on SQLite,
answers the same queries, and a new process (another replica) reads what was imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

from kefu.kg.store import KnowledgeGraph

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
AT = datetime.fromisoformat("2026-11-20T10:00:00+08:00")  # inside the sample shop's promotion month


def test_sample_shop_imports_and_answers_like_sqlite(shared_state, shop_kg, kefu_home):
    graph = KnowledgeGraph.open()
    try:
        assert graph.engine.dialect.name == "postgresql"
        report = graph.import_path(SHOP)
        assert report.version == shop_kg.version  # the same content hashes to the same version on both databases
        assert graph.stats() == shop_kg.stats()
        sku = sorted(shop_kg.snapshot().products)[0]
        assert graph.product(sku) == shop_kg.product(sku)
        assert graph.promotions(AT) and [p.id for p in graph.promotions(AT)] == [p.id for p in shop_kg.promotions(AT)]
        order = shop_kg.order(_first_order_no(shop_kg))
        assert graph.order(order.order_no) == order
        assert graph.orders_of(order.customer_id) == shop_kg.orders_of(order.customer_id)
    finally:
        graph.close()
    assert not (kefu_home / "kg.db").exists()

    check = textwrap.dedent("""
        import json
        from kefu.kg.store import KnowledgeGraph
        graph = KnowledgeGraph.open()
        print(json.dumps({"version": graph.version, "stats": graph.stats()}))
    """)
    seen = json.loads(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                                     timeout=120).stdout.strip().splitlines()[-1])
    assert seen == {"version": shop_kg.version, "stats": shop_kg.stats()}


def _first_order_no(graph: KnowledgeGraph) -> str:
    with graph.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT order_no FROM kg_orders ORDER BY order_no LIMIT 1").scalar()


def test_a_shared_graphs_snapshot_reads_the_version_once_per_window(shared_state, monkeypatch):
    """A turn reads the snapshot a dozen times; on PostgreSQL each ``version`` read is a round trip, so the snapshot
    re-reads it at most once per ``VERSION_CHECK_S``. An import by another replica shows within that window; this
    process's own import shows at once."""
    from kefu.kg import store

    reader, writer = KnowledgeGraph.open(), KnowledgeGraph.open()
    try:
        writer.import_path(SHOP / "products.csv")
        reads = []
        original = KnowledgeGraph.version
        monkeypatch.setattr(KnowledgeGraph, "version", property(lambda self: reads.append(1) or original.fget(self)))
        clock = [1000.0]
        monkeypatch.setattr(store.time, "monotonic", lambda: clock[0])
        first = reader.snapshot()
        for _ in range(12):
            assert reader.snapshot() is first
        assert len(reads) == 1
        writer.import_path(SHOP / "policies.json")  # another replica changes the graph
        assert reader.snapshot() is first  # still inside the window
        clock[0] += store.VERSION_CHECK_S
        fresh = reader.snapshot()
        assert fresh.version != first.version and fresh.policies and len(reads) == 2
        reader.import_path(SHOP / "faq.json")  # its own import: no waiting
        assert reader.snapshot().faq and len(reads) >= 3
    finally:
        reader.close()
        writer.close()
