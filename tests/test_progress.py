"""kefu.progress: Rich's bar on a terminal, plain lines with an ETA everywhere else."""

import io

from kefu.progress import Progress, duration, is_terminal


def test_plain_lines_carry_count_eta_and_info():
    stream = io.StringIO()
    with Progress(6, "train", every_n=2, every_s=3600, stream=stream) as bar:
        for step in range(6):
            bar.advance(info=f"loss {1.0 / (step + 1):.4f} 150 tok/s")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert lines[-1].startswith("train: 6/6 (100%) elapsed ") and " eta 0:00 " in lines[-1]
    assert lines[-1].endswith("loss 0.1667 150 tok/s")


def test_a_line_every_few_seconds_whatever_the_count(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("kefu.progress.time.monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = Progress(1000, "train", every_n=500, every_s=30, stream=stream)
    for _ in range(3):
        clock[0] += 31
        bar.advance()
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["1/1000", "2/1000", "3/1000"]
    assert "elapsed 1:33 eta 8:35:07" in stream.getvalue().splitlines()[-1]  # 31 s per unit, 997 to go


def test_rich_bar_only_on_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as handle:
        assert not is_terminal(handle)
        assert Progress(3, stream=handle)._bar is None
    assert not is_terminal(object())
    forced = io.StringIO()
    with Progress(3, "eval", stream=forced, rich=True) as bar:
        bar.advance(3, info="done")
    assert "3/3" in forced.getvalue()
    silent = io.StringIO()
    with Progress(3, stream=silent, enabled=False) as bar:
        bar.advance(3)
    assert silent.getvalue() == ""


def test_duration():
    assert [duration(s) for s in (0, 59.9, 61, 3600, 4 * 3600 + 62)] == ["0:00", "0:59", "1:01", "1:00:00",
                                                                         "4:01:02"]
