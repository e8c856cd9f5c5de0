from pathlib import Path

import pytest

from kefu.testing import make_dialogues, make_model_dir, write_jsonl


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("loop_tiny_gemma3"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    """A real (tiny) training run: RUN/adapter + RUN/config.yaml, as `kefu train` writes them."""
    from kefu.train.config import TrainConfig
    from kefu.train.trainer import train

    root = tmp_path_factory.mktemp("loop_run")
    data = write_jsonl(root / "data" / "train.jsonl", make_dialogues(16, seed=1))
    train(TrainConfig(model=str(tiny_model), max_steps=3, batch_size=4, max_len=128, save_steps=0,
                      learning_rate=5e-3, tensorboard=False), data, root / "run", progress=False,
          consent_override="tests: synthetic dialogues (kefu.testing), no consent record")
    return root / "run"


@pytest.fixture
def prepared_old(tmp_path) -> Path:
    folder = tmp_path / "old"
    write_jsonl(folder / "train.jsonl", make_dialogues(24, seed=2))
    write_jsonl(folder / "test.jsonl", make_dialogues(4, seed=3))
    return folder
