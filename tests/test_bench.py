"""``rnnforge bench`` (rnnforge/bench.py): the engine table and the fused engine's C-loop line."""

from rnnforge import _ckernels
from rnnforge.cli import main


def test_bench_command_prints_the_engine_table(capsys):
    assert main(["bench", "--cells", "gru", "rnn_sigmoid", "--shapes", "3x2x2x3", "--repeats", "1",
                 "--engines", "native", "fused"]) == 0
    out = capsys.readouterr().out
    assert "rnnforge bench: resolved config" in out
    assert "| gru | 3x2x2x3 | fused |" in out and "| rnn_sigmoid | 3x2x2x3 | fused |" in out
    assert "| rnn_sigmoid | 3x2x2x3 | native |" not in out  # cannot run: not timed
    # what engine="auto" runs, per row: the fixed rule here (the suite runs with autotune off)
    assert "auto: the fixed rule (engines.rule; autotune off)" in out
    if _ckernels.available("rnn"):
        fused_row = next(l for l in out.splitlines() if l.startswith("| gru | 3x2x2x3 | fused |"))
        assert fused_row.endswith("| fwd, fwd+bwd |")
    # what runs at which batch, or why not
    assert ("fused: loops over time in C at batch lstm <= 64" if _ckernels.available("rnn")
            else "fused: compiled loops unavailable") in out
    assert main(["bench", "--shapes", "3x2"]) == 2
    assert "TxBxIxH" in capsys.readouterr().err
