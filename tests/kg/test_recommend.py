"""Recommendation: attribute reasons, hard filters, and MMR diversity (never a list of near-duplicates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.kg.recommend import price_band, recommend, similarity
from kefu.kg.store import KnowledgeGraph

HEADER = "sku,name,aliases,category,brand,price_fen,stock,colors,sizes,material,style,description\n"


@pytest.fixture
def crowded(tmp_path) -> KnowledgeGraph:
    """Eight near-identical 山岚 jackets that match everything, and a few others that match a little less."""
    rows = [f"SL-1{k:04d},山岚冲锋衣{k}号,,冲锋衣,山岚,{39900 + k * 100},10,黑色|蓝色,M|L,GORE-TEX,专业登山,\n"
            for k in range(8)]
    rows += ["SL-20001,北峰冲锋衣,,冲锋衣,北峰,45900,10,黑色,L,尼龙,城市通勤,\n",
             "SL-20002,云径冲锋衣,,冲锋衣,云径,19900,10,黑色,M|L,聚酯纤维,轻量徒步,\n",
             "SL-20003,北峰羽绒服,,羽绒服,北峰,89900,10,黑色,L,鹅绒,专业登山,\n",
             "SL-20004,缺货冲锋衣,,冲锋衣,远山,39900,0,黑色,L,GORE-TEX,专业登山,\n",
             "SL-20005,远山冲锋衣,,冲锋衣,远山,99900,10,黑色,L,GORE-TEX,专业登山,\n"]
    path = tmp_path / "crowded" / "products.csv"
    path.parent.mkdir()
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    kg = KnowledgeGraph.open()
    kg.import_path(path)
    return kg


def test_relevance_only_returns_near_duplicates(crowded):
    picks = recommend(crowded, category="冲锋衣", color="黑", size="L", style="专业登山", lambda_=1.0, limit=5)
    assert {r.product.brand for r in picks} == {"山岚"}


def test_mmr_spreads_across_brands_styles_and_price_bands(crowded):
    picks = recommend(crowded, category="冲锋衣", color="黑", size="L", style="专业登山", limit=5)
    brands = [r.product.brand for r in picks]
    assert brands[0] == "山岚" and len(set(brands)) >= 3
    assert len({r.product.style for r in picks}) >= 2 and len({price_band(r.product.price_fen) for r in picks}) >= 2
    for a in range(len(picks)):  # no two items in the list are near-duplicates
        for b in range(a + 1, len(picks)):
            assert similarity(picks[a].product, picks[b].product) < 1.0
    assert any(reason.startswith("换个品牌") for r in picks[1:] for reason in r.reasons)


def test_reasons_explain_each_match(crowded):
    first = recommend(crowded, category="冲锋衣", color="黑色", size="L", max_price_fen=50000, limit=1)[0]
    assert first.reasons[:3] == ["品类：冲锋衣", "有黑色", "有L码"]
    assert first.reasons[3].endswith("在预算内（≤¥500.00）") and first.relevance == 1.0


def test_hard_filters_category_budget_stock_and_determinism(crowded):
    picks = recommend(crowded, category="冲锋衣", max_price_fen=40000, limit=10)
    assert all(r.product.category == "冲锋衣" and r.product.price_fen <= 40000 and r.product.stock > 0 for r in picks)
    assert "SL-20004" not in {r.product.sku for r in picks}
    assert "SL-20004" in {r.product.sku for r in recommend(crowded, category="冲锋衣", in_stock_only=False, limit=20)}
    again = recommend(crowded, category="冲锋衣", max_price_fen=40000, limit=10)
    assert [r.product.sku for r in picks] == [r.product.sku for r in again]
    assert recommend(crowded, category="帐篷") == []
