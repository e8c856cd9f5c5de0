"""No untuned model in front of customers: without a trained run, `kefu serve` loads no model and answers from the
knowledge graph, or hands off; --allow-base-model is for experiments."""

import asyncio

import pytest

from kefu.serve.build import build_service, serves_base_model_only
from kefu.serve.config import ServeConfig
from serve_support import REPO_SHOP


def test_only_a_local_engine_without_run_adapter_or_registry_serves_the_base_model():
    config = ServeConfig()
    assert serves_base_model_only(config, run=None, adapters={})
    assert not serves_base_model_only(config, run="demo_out/run", adapters={})
    assert not serves_base_model_only(config, run=None, adapters={"shop": "/a"})
    assert not serves_base_model_only(config, run=None, adapters={}, registry=True)
    assert not serves_base_model_only(ServeConfig(engine="remote", remote_url="http://x"), run=None, adapters={})


@pytest.mark.skipif(not (REPO_SHOP / "products.csv").exists(), reason="sample shop not generated")
def test_without_a_run_no_model_is_loaded_and_customers_get_the_kg_or_a_person(tmp_path, shop_time):
    from kefu.kg.store import KnowledgeGraph

    kg = KnowledgeGraph.open(f"sqlite:///{tmp_path / 'kg.db'}")
    kg.import_path(REPO_SHOP)
    service = build_service(ServeConfig(), kg=kg)  # would load Gemma if it did not refuse
    assert service.engine is None

    def ask(text):
        return asyncio.run(service.answer([{"role": "user", "content": text}]))

    price = ask("X2轻量硬壳冲锋衣多少钱")
    assert price.path == "light" and "899" in price.text
    chat = ask("你们家的衣服设计师是谁呀，聊聊设计理念")  # nothing in the data answers it
    assert chat.path == "handoff" and chat.reason == "no trained model" and "人工" in chat.text
    assert "繁忙" not in chat.text  # not dressed up as an engine failure
