"""The memory experiment: task generators, determinism, a quick learning run, CLI errors."""

import csv
import math
import re

import pytest
import torch

from rnnforge import cli, engines
from rnnforge.errors import OptionError, UserError
from rnnforge.experiments.memory import (SOLVED_BELOW, AddingTask, CopyTask, DelayTask,
                                         MemoryNet, ParityTask, make_task, run_memory, train_one)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- generators ---------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 3, 7, 50])
def test_adding_targets_are_the_sum_of_the_two_marked_values(T):
    x, y = AddingTask().sample(T, 64, gen(T))
    assert x.shape == (T, 64, 2) and y.shape == (64,) and x.dtype == torch.float32
    for b in range(64):
        values, markers = x[:, b, 0].tolist(), x[:, b, 1].tolist()
        marked = [t for t in range(T) if markers[t] == 1.0]
        assert sorted(set(markers)) in ([0.0, 1.0], [1.0])
        assert len(marked) == 2, marked
        assert marked[0] < T // 2 <= marked[1]  # one in each half
        assert y[b].item() == pytest.approx(values[marked[0]] + values[marked[1]], abs=1e-6)
        assert all(0.0 <= v < 1.0 for v in values)


def test_adding_baseline_is_the_variance_of_a_sum_of_two_uniforms():
    # Var(U1 + U2) = 2 * Var(U) = 2 * (1/12) = 1/6: the MSE of always answering E[y] = 1.
    assert AddingTask().baseline == pytest.approx(2 * (1 / 12))
    assert AddingTask().baseline == pytest.approx(0.1667, abs=5e-5)
    _, y = AddingTask().sample(20, 200_000, gen(1))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert ((y - 1.0) ** 2).mean().item() == pytest.approx(1 / 6, abs=0.003)
    pred = torch.ones(200_000, 1)
    assert AddingTask().error(pred, y) == pytest.approx(1 / 6, abs=0.003)


def test_copy_layout_symbols_then_T_blanks_then_recall_cue():
    K, A, T = 4, 6, 9
    task = CopyTask(K, A)
    x, y = task.sample(T, 16, gen(2))
    assert x.shape == (K + T + K, 16, A + 2) and y.shape == (K, 16) and y.dtype == torch.long
    tokens = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(K + T + K, 16))  # one-hot
    for b in range(16):
        seq = tokens[:, b].tolist()
        assert seq[:K] == y[:, b].tolist()  # the symbols first, in order
        assert all(0 <= s < A for s in seq[:K])
        assert seq[K:K + T] == [A] * T  # T blanks: the delay
        assert seq[K + T:] == [A + 1] * K  # the recall cue
    out = torch.arange(K + T + K).view(-1, 1, 1).float()
    assert task.states(out).flatten().tolist() == list(range(K + T, K + T + K))
    assert task.baseline == pytest.approx(1 - 1 / A)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_delay_target_is_the_bit_of_k_steps_ago(k):
    T, B = 12, 8
    task = DelayTask(k)
    x, y = task.sample(T, B, gen(k))
    bits = x[..., 0].long()  # (T, B)
    assert set(bits.unique().tolist()) <= {0, 1}
    states = task.states(torch.arange(T).view(-1, 1, 1).expand(T, B, 1))  # which step reads y[j]
    assert y.shape == (T - k, B) and states.shape[0] == T - k
    for j in range(T - k):
        t = states[j, 0, 0].item()
        for b in range(B):
            assert y[j, b].item() == bits[t - k, b].item()


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_parity_target_is_xor_of_the_last_k_bits(k):
    T, B = 11, 8
    task = ParityTask(k)
    x, y = task.sample(T, B, gen(10 + k))
    bits = x[..., 0].long().tolist()  # (T, B)
    states = task.states(torch.arange(T).view(-1, 1, 1))
    assert y.shape == (T - k + 1, B) and states.shape[0] == T - k + 1
    for j in range(T - k + 1):
        t = int(states[j, 0, 0])
        for b in range(B):
            xor = 0
            for s in range(t - k + 1, t + 1):
                xor ^= bits[s][b]
            assert y[j, b].item() == xor


@pytest.mark.parametrize("name", ["adding", "copy", "delay", "parity"])
def test_generators_are_deterministic_from_the_seed(name):
    task = make_task(name)
    a, b, c = (task.sample(20, 5, gen(s)) for s in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_model_init_is_deterministic_from_the_seed():
    task = make_task("adding")
    r1 = train_one(task, "gru", 6, 3, steps=5, eval_every=5, test_size=8, hidden=4, batch=4)
    r2 = train_one(task, "gru", 6, 3, steps=5, eval_every=5, test_size=8, hidden=4, batch=4)
    assert r1.test_error == r2.test_error


def test_lstm_fb_starts_with_forget_bias_and_the_notes_lstm_has_no_bias():
    task = make_task("adding")
    net = MemoryNet("lstm-fb", task, 5, forget_bias=1.0)
    assert torch.equal(net.rnn.cell(0).b_f, torch.ones(5))
    assert MemoryNet("lstm", task, 5).rnn.cell(0).b_f is None
    assert MemoryNet("rnn", task, 5).rnn.mode == "rnn_sigmoid"


# -- learning ---------------------------------------------------------------------------------
def test_lstm_beats_the_trivial_baseline_on_short_adding():
    task = make_task("adding")
    r = train_one(task, "lstm", 12, 0, steps=400, seconds=600, hidden=16, batch=32, lr=1e-2,
                  eval_every=50, test_size=256)
    # always-1 gives 1/6 ≈ 0.167; demand a large margin
    assert r.test_error < 0.05, r
    assert r.engine in engines.ENGINES


def test_run_writes_table_csv_and_plot(tmp_path):
    results = run_memory("delay", ["rnn", "lstm"], [5, 8], [0], steps=3, seconds_per_run=30,
                         hidden=4, batch=4, eval_every=2, test_size=8, k=2, out=tmp_path,
                         progress=False)
    assert [(r.cell, r.T) for r in results] == [("rnn", 5), ("lstm", 5), ("rnn", 8), ("lstm", 8)]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 and rows[0]["cell"] == "rnn"
    assert {row["engine"] for row in rows} <= set(engines.ENGINES)  # whichever auto picked
    md = (tmp_path / "results.md").read_text()
    assert "| cell | T=5 | T=8 |" in md and "| lstm |" in md
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in results:
        assert r.steps == 3 and r.stopped == "steps" and math.isfinite(r.test_error)
        assert r.solved == (r.test_error < SOLVED_BELOW)


# -- bad values -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, option, match", [
    (dict(task="adder"), "task", "task must be one of adding, copy, delay, parity, got 'adder'"),
    (dict(cells=["lstm", "transformer"]), "cells", "cells names an unknown cell 'transformer'; choose from"),
    (dict(cells=[]), "cells", "cells must name at least one cell"),
    (dict(lengths=[1]), "lengths", "lengths must be integers >= 2 for the adding task, got 1"),
    (dict(task="delay", lengths=[3], k=3), "lengths", "lengths must be integers >= 4 for the delay task"),
    (dict(steps=0), "steps", "steps must be >= 1, got 0"),
    (dict(steps=2.5), "steps", "steps must be a whole number, got 2.5"),
    (dict(seconds_per_run=0), "seconds_per_run", "seconds_per_run must be > 0, got 0"),
    (dict(seconds_per_run=-5.0), "seconds_per_run", "seconds_per_run must be > 0, got -5.0"),
    (dict(seconds_per_run=math.nan), "seconds_per_run", "seconds_per_run must be > 0, got nan"),
    (dict(seconds_per_run=math.inf), "seconds_per_run", "seconds_per_run must be > 0, got inf"),
    (dict(seeds=[-1]), "seeds", "seeds must be in [0, 18446744073708551612], got -1"),
    (dict(seeds=[2 ** 64]), "seeds", "seeds must be in [0, "),
    (dict(hidden=0), "hidden", "hidden must be >= 1, got 0"),
    (dict(batch=-3), "batch", "batch must be >= 1, got -3"),
    (dict(lr=0.0), "lr", "lr must be > 0, got 0.0"),
    (dict(lr=math.nan), "lr", "lr must be > 0, got nan"),
    (dict(clip=-1.0), "clip", "clip must be > 0, got -1.0"),
    (dict(forget_bias=math.inf), "forget_bias", "forget_bias must be a finite number, got inf"),
    (dict(k=0, task="delay"), "k", "k must be >= 1, got 0"),
    (dict(alphabet=1, task="copy"), "alphabet", "alphabet must be >= 2, got 1"),
    (dict(hidden=10 ** 7), "hidden", "hidden 10000000 would need about 5.96e+06 GiB for the weights"),
    (dict(device="nonsense"), "device", "device 'nonsense' is not a device"),
])
def test_library_rejects_bad_values_naming_the_parameter(kwargs, option, match):
    with pytest.raises(OptionError, match=re.escape(match)) as info:
        run_memory(**{"lengths": [10], "seeds": [0], "progress": False, **kwargs})
    assert info.value.option == option
    assert "--" not in str(info.value)  # the library names its parameter, never a flag


def test_activations_too_large_for_the_machine_are_refused():
    with pytest.raises(UserError, match=r"T=100000000000 with 500 sequences and 32 hidden units "
                                        r"would need about .* GiB; this machine has"):
        run_memory(lengths=[10 ** 11], seeds=[0], progress=False)


def test_train_one_checks_its_budget():
    with pytest.raises(OptionError, match="seconds must be > 0, got nan"):
        train_one(make_task("adding"), "gru", 6, 0, steps=5, seconds=math.nan)


@pytest.mark.parametrize("argv, match", [
    (["--task", "adder"], "--task must be one of adding, copy, delay, parity, got 'adder'"),
    (["--cells", "lstm,elman"], "--cells names an unknown cell 'elman'"),
    (["--lengths", "1"], "--lengths must be integers >= 2 for the adding task, got 1"),
    (["--lengths", "ten"], "--lengths must be a whole number, got 'ten'"),
    (["--seeds", "-1"], "--seeds must be in [0, 18446744073708551612], got -1"),
    (["--seeds", str(2 ** 64)], "--seeds must be in [0, "),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--steps", "-4"], "--steps must be >= 1, got -4"),
    (["--steps", "nan"], "--steps must be a whole number, got 'nan'"),
    (["--steps", "inf"], "--steps must be a whole number, got 'inf'"),
    (["--seconds-per-run", "0"], "--seconds-per-run must be > 0, got 0.0"),
    (["--seconds-per-run", "-2"], "--seconds-per-run must be > 0, got -2.0"),
    (["--seconds-per-run", "nan"], "--seconds-per-run must be > 0, got nan"),
    (["--seconds-per-run", "inf"], "--seconds-per-run must be > 0, got inf"),
    (["--minutes", "-1"], "--minutes must be > 0, got -1.0"),
    (["--minutes", "nan"], "--minutes must be > 0, got nan"),
    (["--minutes", "inf"], "--minutes must be > 0, got inf"),
    (["--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["--lr", "nan"], "--lr must be > 0, got nan"),
    (["--lr", "inf"], "--lr must be > 0, got inf"),
    (["--lr", "-0.1"], "--lr must be > 0, got -0.1"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--hidden", "0"], "--hidden must be >= 1, got 0"),
    (["--hidden", "-4"], "--hidden must be >= 1, got -4"),
    (["--hidden", "nan"], "--hidden must be a whole number, got 'nan'"),
    (["--hidden", "1000000"], "--hidden 1000000 would need about 5.96e+04 GiB for the weights"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--batch", "-1"], "--batch must be >= 1, got -1"),
    (["--batch", "inf"], "--batch must be a whole number, got 'inf'"),
    (["--clip", "0"], "--clip must be > 0, got 0.0"),
    (["--clip", "-1"], "--clip must be > 0, got -1.0"),
    (["--clip", "nan"], "--clip must be > 0, got nan"),
    (["--clip", "inf"], "--clip must be > 0, got inf"),
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--forget-bias", "nan"], "--forget-bias must be a finite number, got nan"),
    (["--task", "copy", "--copy-symbols", "0"], "--copy-symbols must be >= 1, got 0"),
    (["--task", "delay", "--k", "0"], "--k must be >= 1, got 0"),
    (["--threads", "-2"], "--threads must be in [0, 4096], got -2"),
    (["--device", "nonsense"], "--device 'nonsense' is not a device"),
])
def test_cli_bad_values_are_one_line_errors(argv, match, capsys, tmp_path):
    code = cli.main(["experiment", "memory", "--no-progress", "--out", str(tmp_path), *argv])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2
    assert captured.out == ""  # checked before the config is printed or anything runs
    assert err.startswith("rnnforge experiment: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert match in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_without_an_experiment_name_says_which_exist(capsys):
    assert cli.main(["experiment"]) == 2
    assert "name an experiment: memory" in capsys.readouterr().err


def test_cli_tiny_run_prints_config_and_table(capsys, tmp_path):
    code = cli.main(["experiment", "memory", "--task", "parity", "--k", "2", "--cells", "gru",
                     "--lengths", "6", "--seeds", "0", "1", "--steps", "2", "--hidden", "4",
                     "--batch", "4", "--test-size", "8", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "rnnforge experiment: resolved config" in out and "seconds_per_run = 120.0" in out
    assert "| gru |" in out and (tmp_path / "results.csv").exists()
