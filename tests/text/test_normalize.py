"""Character folding: the light one for training text, the full one for matching."""

from __future__ import annotations

from kefu.text.normalize import simplify, to_halfwidth, to_simplified


def test_halfwidth_keeps_chinese_punctuation_and_lengths():
    assert to_halfwidth("ＸＬ码　１２３，好的！") == "XL码 123，好的！"
    assert to_halfwidth("好的") == "好的"


def test_simplify_folds_every_width_and_script():
    assert to_simplified("後來的衣服") == "后来的衣服"
    assert simplify("ＸＬ碼，１２３！") == "XL码,123!"
