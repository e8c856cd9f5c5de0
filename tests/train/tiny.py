"""The train tests' tiny models and data: the shared builders in ``kefu.testing``."""

from kefu.testing import (AGENT, ASCII, CUSTOMER, SPECIALS, SYSTEM, make_dialogues, make_model,  # noqa: F401
                          make_model_dir, make_tokenizer, vocab, write_jsonl)
