"""`kefu kg import|query|price` through Typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kefu.cli import app

runner = CliRunner()


def test_import_query_price(shop_dir, tmp_path):
    result = runner.invoke(app, ["kg", "import", str(shop_dir)])
    assert result.exit_code == 0, result.output
    assert "products" in result.output and "version" in result.output

    result = runner.invoke(app, ["kg", "query", "我的订单2026111012345678到哪了", "--customer", "C0001",
                                 "--at", "2026-11-12T10:00:00+08:00"])
    assert result.exit_code == 0, result.output
    assert "order_no" in result.output and "【店铺知识】" in result.output and "顺丰速运" in result.output

    result = runner.invoke(app, ["kg", "query", "风行冲锋衣多少钱", "--json", "--at", "2026-11-12T10:00:00+08:00"])
    data = json.loads(result.stdout)
    assert data["answer"].endswith("到手¥549.00，另赠羊毛徒步袜×1。")

    cart = tmp_path / "cart.json"
    cart.write_text(json.dumps([{"sku": "SL-10003", "quantity": 1}, {"sku": "SL-10001", "quantity": 1}]), encoding="utf-8")
    result = runner.invoke(app, ["kg", "price", "--cart", str(cart), "--at", "2026-11-12T10:00:00+08:00",
                                 "--coupon", "NEW10"])
    assert result.exit_code == 0, result.output
    assert "payable ¥1233.15" in result.output
    lines = result.output.splitlines()
    order = [next(i for i, line in enumerate(lines) if key in line) for key in ("羽绒服八五折", "双11跨店满减", "新客券")]
    assert order == sorted(order) and "省¥134.85" in result.output


def test_price_uses_the_time_given(shop_dir, tmp_path):
    runner.invoke(app, ["kg", "import", str(shop_dir)])
    cart = tmp_path / "cart.json"
    cart.write_text(json.dumps({"items": [{"sku": "SL-10002", "quantity": 1}]}), encoding="utf-8")
    october = runner.invoke(app, ["kg", "price", "--cart", str(cart), "--at", "2026-10-03T10:00:00+08:00"])
    assert "payable ¥229.00" in october.output  # 国庆 满200减100, since expired
    november = runner.invoke(app, ["kg", "price", "--cart", str(cart), "--at", "2026-11-12T10:00:00+08:00"])
    assert "payable ¥279.00" in november.output


def test_cli_errors_are_clear(shop_dir, tmp_path):
    (shop_dir / "products.csv").write_text((shop_dir / "products.csv").read_text(encoding="utf-8")
                                           .replace(",59900,", ",-5,"), encoding="utf-8")
    result = runner.invoke(app, ["kg", "import", str(shop_dir)])
    assert result.exit_code != 0 and "products.csv:2: field `price_fen`: negative value -5" in str(result.exception)
    cart = tmp_path / "cart.json"
    cart.write_text('[{"sku": "SL-404"}]', encoding="utf-8")
    result = runner.invoke(app, ["kg", "price", "--cart", str(cart)])
    assert "unknown SKU SL-404" in str(result.exception)
    result = runner.invoke(app, ["kg", "price", "--cart", str(cart), "--at", "2026-11-12 10:00"])
    assert "UTC offset" in str(result.exception)


def test_url_from_config_file(shop_dir, tmp_path):
    db = tmp_path / "elsewhere.db"
    config = tmp_path / "kefu.yaml"
    config.write_text(f"kg:\n  url: sqlite:///{db}\n", encoding="utf-8")
    result = runner.invoke(app, ["kg", "import", str(shop_dir), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert db.exists() and str(db) in result.output
