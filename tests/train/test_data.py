import pytest

from kefu.train.config import TrainConfig
from kefu.train.data import check_data, with_system
from kefu.types import KefuError
from tiny import write_jsonl


def test_system_prompt_and_facts_are_added_only_when_missing():
    record = {"messages": [{"role": "user", "content": "有M码吗"}, {"role": "assistant", "content": "有的"}],
              "meta": {"facts": ["SL-10023 冲锋衣 M码 库存12", {"sku": "SL-10023", "price_fen": 59900}]}}
    config = TrainConfig(system_prompt="你是客服。", facts_in_system=True)
    messages = with_system(record, config)
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("你是客服。\n\n店铺信息：\n")
    assert '"price_fen": 59900' in messages[0]["content"] and len(messages) == 3
    own = {"messages": [{"role": "system", "content": "自带"}] + record["messages"]}
    assert with_system(own, config)[0]["content"] == "自带"
    assert with_system(record, TrainConfig())[0]["role"] == "user"


def test_check_data_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"id": "a", "messages": [{"role": "user", "content": "x"},
                                                                     {"role": "agent", "content": "y"}]}])
    with pytest.raises(KefuError, match=r"train.jsonl:1: messages\[1\] needs role"):
        check_data(tmp_path)
    with pytest.raises(KefuError, match="training data not found"):
        check_data(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(KefuError, match="no train.jsonl"):
        check_data(tmp_path / "empty_dir")
