"""The kg stage: the shop's knowledge graph (products, promotions, after-sales policies, logistics playbooks, orders),
an exact promotion price engine, per-turn fact retrieval for grounding, and the business tools the model may call.

Entry points: ``kefu.kg.store.KnowledgeGraph``, ``kefu.kg.promotions.price_cart``, ``kefu.kg.retrieval.retrieve``,
``kefu.kg.tools.ToolBox`` / ``TOOL_SCHEMAS``, ``kefu.kg.recommend.recommend``; CLI ``kefu kg import|query|price``.
"""
