"""``engine="auto"`` by measurement (engines/tuner.py): what it picks, what it caches, when it
stays out of the way. The rest of the suite runs with measuring off (conftest.py); every test
here turns it on explicitly, with its cache in a fresh folder."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

import rnnforge
from rnnforge import engines
from rnnforge.engines import ENGINES, tuner
from rnnforge_testing import make_layer


@pytest.fixture
def tune(monkeypatch, tmp_path):
    """Measuring on, the cache in tmp_path/cache, nothing remembered; counts measurements."""
    monkeypatch.setenv("RNNFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuner, "_memory", {})
    monkeypatch.setattr(tuner, "oversubscribed", lambda: False)  # CI's load must not decide these tests
    engines.autotune(True)
    calls = []
    real = tuner.measure

    def counted(*args, **kw):
        calls.append(args[2])
        return real(*args, **kw)
    monkeypatch.setattr(tuner, "measure", counted)
    return calls  # conftest.py's fixture restores measuring's setting afterwards


def fake_times(monkeypatch, fastest):
    """Measurements that find ``fastest`` fastest, whatever the clock says."""
    calls = []

    def measure(layer, x, candidates, grad, repeats=tuner.REPEATS):
        calls.append(list(candidates))
        return {name: (1.0 if name == fastest else 2.0) for name in candidates}
    monkeypatch.setattr(tuner, "measure", measure)
    return calls


def busy(seconds):
    """Burn this thread's CPU for ``seconds``: slow on the wall clock and on the thread's
    CPU clock alike (at one thread a measurement reads the latter)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def slowed(monkeypatch, name, seconds=0.05):
    engine = ENGINES[name].engine
    forward = engine.forward

    def slow(*args):
        busy(seconds)
        return forward(*args)
    monkeypatch.setattr(engine, "forward", slow)


@pytest.mark.parametrize("grad", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("slow", ["fused", "native"])
def test_never_picks_a_slowed_engine(tune, monkeypatch, slow, grad):
    slowed(monkeypatch, slow)
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    with torch.set_grad_enabled(grad):
        layer(x)
    assert layer.engine_used == ({"fused", "native"} - {slow}).pop()
    assert tune == [["fused", "native"]]  # measured once, both candidates


class SleepyEngine:
    """A registered engine that can run everything the reference can, slowly."""
    name = "sleepy"

    def why_not(self, layer, x, lengths):
        return ENGINES["reference"].engine.why_not(layer, x, lengths)

    def forward(self, layer, x, h0, c0, lengths):
        busy(0.05)
        return ENGINES["reference"].engine.forward(layer, x, h0, c0, lengths)


@pytest.mark.parametrize("mode", ["rnn_sigmoid", "gru"])
def test_a_fake_slow_engine_is_measured_and_never_picked(tune, monkeypatch, mode):
    monkeypatch.setitem(ENGINES, "sleepy", engines._Ranked(SleepyEngine()))
    monkeypatch.setattr(engines, "MEASURED", ("sleepy", *engines.MEASURED))
    layer = make_layer(mode, 3, 4)
    layer(torch.randn(5, 2, 3))
    assert layer.engine_used != "sleepy"
    # the sigmoid RNN: fused against sleepy (native has no such cell); the GRU: all three
    assert tune == [["sleepy", "fused"] if mode == "rnn_sigmoid" else ["sleepy", "fused", "native"]]
    assert "engine='auto' runs" in engines.available(layer, torch.randn(5, 2, 3))["sleepy"]


def test_measurement_leaves_the_callers_state_alone(tune, caplog):
    layer = make_layer("gru", 3, 4, dropout=0.5, num_layers=2)
    x = torch.randn(5, 2, 3, requires_grad=True)
    rng = torch.get_rng_state()
    with caplog.at_level(logging.DEBUG, logger="rnnforge"):
        name = engines.choose(layer, x)
    assert tune == [["fused", "native"]]
    assert torch.equal(torch.get_rng_state(), rng)  # dropout and scratch draws: restored
    assert x.grad is None and all(p.grad is None for p in layer.parameters())
    [record] = [r for r in caplog.records if "rnnforge autotune" in r.getMessage()]
    msg = record.getMessage()
    assert record.levelno == logging.DEBUG
    assert f"|gru|float32|cpu|threads=1|train|L=2|D=1|T=8|B=2|I=4|H=4: {name} (fused " in msg
    assert "native" in msg and "measured in" in msg


def test_a_bucket_is_measured_once(tune):
    layer = make_layer("rnn_tanh", 3, 4)
    for T in (100, 128, 65):  # one bucket: T up to 128
        layer(torch.randn(T, 3, 3))
    assert len(tune) == 1
    layer(torch.randn(129, 3, 3))  # the next bucket
    layer(torch.randn(100, 5, 3))  # another batch bucket
    with torch.no_grad():
        layer(torch.randn(100, 3, 3))  # inference, not training
    torch.set_num_threads(2)
    layer(torch.randn(100, 3, 3))  # another thread count
    assert len(tune) == 5


def test_the_cache_file_round_trips(tune, monkeypatch, tmp_path):
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    first = engines.choose(layer, x)
    path = tuner.cache_file()
    assert path.parent == tmp_path / "cache" and len(tune) == 1
    data = json.loads(path.read_text())
    from rnnforge import _ckernels

    isa = _ckernels.isa()  # "native", or "avx2" where the suite runs the portable kernels
    assert data["machine"] == {"cpu": tuner._cpu_model(), "isa": isa, "gemm": "auto",
                               "torch": torch.__version__, "rnnforge": rnnforge.__version__}
    [(key, entry)] = data["choices"].items()
    assert entry["engine"] == first and set(entry["ms"]) == {"fused", "native"}
    # another process: nothing in memory; the file answers (its check against the runner-up
    # finding it still ahead)
    other = "native" if first == "fused" else "fused"
    entry["engine"] = other
    path.write_text(json.dumps(data))
    tuner.clear_memory()
    checks = fake_times(monkeypatch, other)
    assert engines.choose(layer, x) == other
    assert len(tune) == 1 and checks == [[other, first]]
    assert not list(path.parent.glob(".autotune-*"))  # no temporary left behind


def _timed(monkeypatch, fastest):
    """Fake measurements (``fastest`` wins) recording (candidates, repeats) of each."""
    calls = []

    def measure(layer, x, candidates, grad, repeats=tuner.REPEATS):
        calls.append((list(candidates), repeats))
        return {name: (1.0 if name == fastest[0] else 2.0) for name in candidates}
    monkeypatch.setattr(tuner, "measure", measure)
    return calls


def test_a_cached_choice_is_checked_once_per_process(tune, monkeypatch):
    fastest = ["fused"]
    calls = _timed(monkeypatch, fastest)
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    assert engines.choose(layer, x) == "fused"
    assert calls == [(["fused", "native"], tuner.REPEATS)]  # measured in full, cached
    for _ in range(2):  # two later processes: each checks the cached engine once, cheaply
        tuner.clear_memory()
        assert engines.choose(layer, x) == "fused" and engines.choose(layer, x) == "fused"
    assert calls[1:] == [(["fused", "native"], tuner.RECHECK_REPEATS)] * 2
    [entry] = json.loads(tuner.cache_file().read_text())["choices"].values()
    assert entry["engine"] == "fused" and abs(entry["checked"] - time.time()) < 60
    # a process where the cached engine lost its check: measured in full, the file follows
    fastest[0] = "native"
    tuner.clear_memory()
    assert engines.choose(layer, x) == "native" and engines.choose(layer, x) == "native"
    assert calls[3:] == [(["fused", "native"], tuner.RECHECK_REPEATS), (["fused", "native"], tuner.REPEATS)]
    [entry] = json.loads(tuner.cache_file().read_text())["choices"].values()
    assert entry["engine"] == "native"
    tuner.clear_memory()
    assert engines.choose(layer, x) == "native"
    assert calls[5:] == [(["native", "fused"], tuner.RECHECK_REPEATS)]
    # on an oversubscribed machine the cached choice is trusted without a check
    monkeypatch.setattr(tuner, "oversubscribed", lambda: True)
    tuner.clear_memory()
    assert engines.choose(layer, x) == "native" and len(calls) == 6


def test_a_check_times_the_cached_engine_against_its_runner_up():
    entry = {"engine": "fused", "ms": {"fused": 1.0, "native": 3.0, "sleepy": 2.0}}
    assert tuner._runner_up(entry, "fused", ["fused", "native", "sleepy"]) == "sleepy"
    assert tuner._runner_up(entry, "fused", ["fused", "native"]) == "native"
    assert tuner._runner_up({"engine": "fused"}, "fused", ["fused", "native"]) == "native"
    assert tuner._runner_up(entry, "fused", ["fused"]) is None


def test_a_measurement_on_a_busy_machine_is_not_cached(tune, monkeypatch):
    """Other jobs' load can reverse a close race: such a choice serves this process only."""
    monkeypatch.setattr(tuner, "oversubscribed", lambda: True)
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    first = engines.choose(layer, x)
    assert len(tune) == 1 and not tuner.cache_file().exists()
    assert engines.choose(layer, x) == first and len(tune) == 1  # remembered in memory
    tuner.clear_memory()  # another process, on a quiet machine, measures and caches
    monkeypatch.setattr(tuner, "oversubscribed", lambda: False)
    engines.choose(layer, x)
    assert len(tune) == 2 and tuner.cache_file().exists()


@pytest.mark.parametrize("what", ["rnnforge", "torch", "isa", "gemm"])
def test_a_version_change_measures_again(tune, monkeypatch, what):
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    engines.choose(layer, x)
    before = tuner.cache_file()
    tuner.clear_memory()
    if what == "rnnforge":
        monkeypatch.setattr(rnnforge, "__version__", rnnforge.__version__ + ".post1")
    elif what == "torch":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    elif what == "isa":  # the other instruction set than the one this run uses
        from rnnforge import _ckernels

        monkeypatch.setenv("RNNFORGE_CPU_ISA", "native" if _ckernels.isa() == "avx2" else "avx2")
    else:
        monkeypatch.setenv("RNNFORGE_GEMM", "blas")
    assert tuner.cache_file() != before
    engines.choose(layer, x)
    assert len(tune) == 2
    # a file whose recorded machine differs (say, renamed by hand) is not believed either
    before.rename(tuner.cache_file())
    tuner.clear_memory()
    engines.choose(layer, x)
    assert len(tune) == 3


def test_a_corrupt_cache_file_is_measured_over(tune):
    layer = make_layer("gru", 3, 4)
    x = torch.randn(5, 2, 3)
    path = tuner.cache_file()
    path.write_text("{not json")
    engines.choose(layer, x)
    assert len(tune) == 1
    assert json.loads(path.read_text())["choices"]


#: requests where the fixed rule and a measurement can disagree (tests/engines/test_engines.py
#: checks the rule itself)
CASES = [("lstm", 2, True), ("lstm", 8, False), ("gru", 70, False), ("gru", 70, True), ("rnn_tanh", 3, False)]


@pytest.mark.parametrize("how", ["call", "env"])
def test_with_autotune_off_the_rule_decides(monkeypatch, how, tmp_path):
    monkeypatch.setenv("RNNFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuner, "_memory", {})
    if how == "call":
        monkeypatch.setenv("RNNFORGE_AUTOTUNE", "1")
        assert engines.autotune() is True
        assert engines.autotune(False) is False
    else:
        monkeypatch.setenv("RNNFORGE_AUTOTUNE", "0")
        assert engines.autotune() is False
    monkeypatch.setattr(tuner, "measure", lambda *a: pytest.fail("measured with autotune off"))
    for mode, B, grad in CASES:
        layer = make_layer(mode, 3, 4)
        x = torch.randn(3, B, 3)
        with torch.set_grad_enabled(grad):
            assert engines.choose(layer, x) == engines.rule(layer, x)
            layer(x)
            assert layer.engine_used == engines.rule(layer, x)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mode, B, grad", CASES)
def test_measured_choice_overrides_the_rule(tune, monkeypatch, mode, B, grad):
    """Where the measurement disagrees with the rule, the measurement wins."""
    layer = make_layer(mode, 3, 4)
    x = torch.randn(3, B, 3)
    with torch.set_grad_enabled(grad):
        other = ({"fused", "native"} - {engines.rule(layer, x)}).pop()
        fake_times(monkeypatch, other)
        assert engines.choose(layer, x) == other
        reason = engines.available(layer, x)[engines.rule(layer, x)]
        assert reason.startswith(f"engine='auto' runs {other} here: measured faster on this machine")


def test_a_near_tie_keeps_the_rule():
    # within 1%: the rule's engine; 2% behind is not a tie (auto promises the fastest within
    # 3%, and the race's noise takes part of that)
    assert tuner.decide({"fused": 1.0, "native": 1.009}, "native") == "native"
    assert tuner.decide({"fused": 1.0, "native": 1.02}, "native") == "fused"
    assert tuner.decide({"fused": 1.0, "native": 0.995}, "fused") == "fused"


def test_race_length():
    """256 steps, or all of a short request; more at a small batch, up to 8192 rows in all."""
    assert tuner.race_steps(1000, 32) == 256 and tuner.race_steps(100, 32) == 100
    assert tuner.race_steps(1000, 1) == 1000 and tuner.race_steps(20000, 1) == 8192
    assert tuner.race_steps(5000, 4) == 2048 and tuner.race_steps(5000, 64) == 256


@pytest.mark.parametrize("T, B, steps", [(300, 1, 300), (300, 64, 256), (9000, 2, 4096)])
def test_the_race_runs_on_race_steps(monkeypatch, T, B, steps):
    seen = []
    forward = ENGINES["fused"].engine.forward

    def spy(layer, x, *rest):
        seen.append(tuple(x.shape))
        return forward(layer, x, *rest)
    monkeypatch.setattr(ENGINES["fused"].engine, "forward", spy)
    monkeypatch.setattr(tuner, "BUDGET_S", 0.0)  # one timed round
    layer = make_layer("lstm", 3, 4)
    times = tuner.measure(layer, torch.randn(T, B, 3), ["fused"], False)
    assert set(seen) == {(steps, B, 3)} and len(seen) == 2 and times["fused"] > 0  # warm-up, one round


def test_tracing_uses_the_rule(tune, monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    layer = make_layer("lstm", 3, 4)
    with FakeTensorMode():
        fake = torch.randn(5, 2, 3)
    assert tuner.tracing(fake)
    assert engines.choose(layer, fake) == engines.rule(layer, fake)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(5, 2, 3)
    assert tuner.tracing(x)
    assert engines.choose(layer, x) == engines.rule(layer, x)
    assert tune == []


def test_pin_wins_where_the_engine_can_run(tune, monkeypatch):
    fake_times(monkeypatch, "fused")
    layer = make_layer("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    engines.pin(layer, "native")
    assert engines.choose(layer, x) == "native"      # training: pinned
    with torch.no_grad():
        assert engines.choose(layer, x) == "fused"   # inference: not pinned, measured
    engines.pin(layer, None)
    assert engines.choose(layer, x) == "fused"
    sig = make_layer("rnn_sigmoid", 3, 4)
    engines.pin(sig, "native")                        # native has no sigmoid RNN: ignored
    assert engines.choose(sig, x) == "fused"
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        engines.pin(layer, "nope")


def _argv(data, out, *extra):
    return ["train", "--data", str(data), "--cell", "lstm", "--hidden", "8", "--layers", "1",
            "--steps", "4", "--eval-every", "2", "--seq-len", "8", "--batch-size", "2",
            "--out", str(out), "--no-progress", "--no-tensorboard", "--device", "cpu",
            "--threads", "1", *map(str, extra)]


def test_resume_repeats_the_checkpoints_engine(tune, monkeypatch, tmp_path):
    """The run trains on native (measured fastest then); on resume a measurement would say
    fused, but the checkpoint's engine is kept: the same weights as the unbroken run."""
    from safetensors.torch import load_file

    from rnnforge import checkpoint
    from rnnforge.charlm.checkpoint import LAST
    from rnnforge.charlm.train import Trainer
    from rnnforge.cli import main

    data = tmp_path / "c.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    fake_times(monkeypatch, "native")
    assert main(_argv(data, tmp_path / "full")) == 0
    step = Trainer.train_step

    def interrupted(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return step(self)
    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(_argv(data, tmp_path / "part")) == 130
    monkeypatch.setattr(Trainer, "train_step", step)
    assert checkpoint.load(tmp_path / "part" / LAST)[1]["engine"] == "native"

    tuner.clear_memory()  # as on another machine: nothing remembered, nothing cached
    tuner.cache_file().unlink()
    measured = fake_times(monkeypatch, "fused")  # what auto would run now
    assert main(["train", "--resume", "--out", str(tmp_path / "part")]) == 0
    assert measured  # evaluation (inference) is measured afresh; training is pinned
    a, b = load_file(tmp_path / "full" / LAST), load_file(tmp_path / "part" / LAST)
    for name in a:
        if name.startswith(("model.", "optim.")):
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    assert checkpoint.load(tmp_path / "part" / LAST)[1]["engine"] == "native"


def test_one_thread_on_cpu_is_timed_on_its_own_cpu_clock(monkeypatch):
    """Other processes' load must not decide a one-thread race on CPU."""
    x = torch.zeros(1)
    assert tuner.clock(x) is time.thread_time
    t0 = tuner.clock(x)()
    time.sleep(0.05)  # off the CPU: no time on this clock
    assert tuner.clock(x)() - t0 < 0.03
    assert tuner.clock(torch.zeros(1, device="meta")) is time.perf_counter
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert tuner.clock(x) is time.perf_counter
