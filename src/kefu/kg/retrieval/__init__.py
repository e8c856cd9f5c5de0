"""Retrieval for one customer turn: link entities (``linker``), gather the facts the model needs to answer
truthfully (``facts``), and, when the shop's data settles every question in the turn, a direct grounded reply — the
light path (``answers``: cart prices with quantities and coupons, promotions by name, attributes, stock, after-sales).
"""

from kefu.kg.retrieval.facts import (CUES, FACT_PRIORITY, MY_ORDER, PLAYBOOK_CUES, PLAYBOOK_NAMES, Facts,
                                     applicable_promotions, retrieve, unit_price)
from kefu.kg.retrieval.linker import (BASE_COLORS, COLOR_WORD, FILLER, ORDER_NO, PUNCT, SIZE, TRACKING_NO, Linker,
                                      link, linker, trie_regex)

__all__ = ["retrieve", "Facts", "link", "linker", "Linker", "trie_regex", "applicable_promotions", "unit_price", "CUES",
           "FACT_PRIORITY", "MY_ORDER", "PLAYBOOK_CUES", "PLAYBOOK_NAMES", "BASE_COLORS", "COLOR_WORD", "FILLER",
           "ORDER_NO", "PUNCT", "SIZE", "TRACKING_NO"]
