"""The forecaster's static sampling step (graph-capturable): the values of the plain loop
(step_inputs, layer.step, readout, head.ppf with Python positions), op by op on the CPU;
replayed as a CUDA graph on a GPU."""

import numpy as np
import pytest
import torch

from rnnforge.errors import OptionError
from rnnforge.forecast.features import step_inputs
from rnnforge.forecast.model import CELLS, Forecaster, ModelConfig, Rollout
from rnnforge.forecast.series import Series
from synthetic import seasonal_ar


def model_of(cell="lstm", head="gaussian", growth=(), embed=0, device="cpu"):
    torch.manual_seed(0)
    m = Forecaster(ModelConfig(cell=cell, head=head, hidden=6, layers=2, dropout=0.0,
                               features=dict(lags=[1, 2, 5], harmonics=1, growth=list(growth)),
                               series_embedding=embed, series_names=["a", "b"] if embed else []))
    return m.to(device).eval()


@torch.no_grad()
def plain_loop(model, buf, phase, u, state, ids):
    """One iteration per horizon step with Python positions: what sample_paths computed before."""
    buf = buf.clone()
    K = model.spec.max_lag
    for k in range(phase.shape[1]):
        x = model.with_embedding(step_inputs(buf, K + k, phase[:, k], model.spec), ids)
        top, state = model.rnn.step(x, state)
        buf[:, K + k] = model.head.ppf(model.readout(top), u[k]).to(buf.dtype)
    return buf


def inputs(model, M=7, H=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = model.spec.max_lag
    buf = torch.full((M, K + H), float("nan"))
    buf[:, :K] = torch.randn(M, K, generator=g)
    buf[2, K - 1] = float("nan")  # a missing lag-1 value: the observed flag and nan_to_num
    phase = torch.rand(M, H, generator=g)
    u = torch.rand(H, M, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    L, Hd = model.rnn.num_layers, model.rnn.hidden_size
    h = torch.randn(L, M, Hd, generator=g) * 0.5
    state = (h, torch.randn(L, M, Hd, generator=g)) if model.rnn.CELL.STATES == 2 else h
    return buf, phase, u, state


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("head", ["gaussian", "student-t", "quantile"])
def test_static_step_gives_the_plain_loops_values(cell, head):
    for growth, embed in (((), 0), ((2,), 0), ((), 2)):
        model = model_of(cell, head, growth, embed)
        buf, phase, u, state = inputs(model)
        ids = torch.tensor([0, 1, 1, 0, 1, 0, 0]) if embed else None
        want = plain_loop(model, buf, phase, u, state, ids)
        run = Rollout.of(model, buf.shape[0], phase.shape[1], ids is not None, graph=False)
        with torch.no_grad():
            got = run(buf, phase, u, state, ids)
        assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(got.nan_to_num(), want.nan_to_num()), \
            (cell, head, growth, embed)


def test_parameters_changed_between_calls_are_seen():
    s = seasonal_ar(200)
    model = model_of("gru", "quantile")
    kw = dict(context=20, horizon=5, num_samples=6)
    before = model.sample_paths([s], [150], generator=torch.Generator().manual_seed(0), **kw)
    with torch.no_grad():
        model.readout.delta.mul_(2.0)
    after = model.sample_paths([s], [150], generator=torch.Generator().manual_seed(0), **kw)
    fresh = model_of("gru", "quantile")
    with torch.no_grad():
        fresh.readout.delta.mul_(2.0)
    np.testing.assert_array_equal(after, fresh.sample_paths([s], [150], generator=torch.Generator().manual_seed(0),
                                                            **kw))
    assert not np.array_equal(before, after)


def test_cuda_graph_needs_a_cuda_device():
    s = seasonal_ar(200)
    with pytest.raises(OptionError, match="needs a CUDA device, got device cpu"):
        model_of().sample_paths([s], [150], context=20, horizon=5, num_samples=3, cuda_graph=True)
    a = model_of().sample_paths([s], [150], context=20, horizon=5, num_samples=3, cuda_graph=False,
                                generator=torch.Generator().manual_seed(4))
    b = model_of().sample_paths([s], [150], context=20, horizon=5, num_samples=3,
                                generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(OptionError, match="the student-t head cannot be captured in a CUDA graph"):
        model_of(head="student-t").sample_paths([s], [150], context=20, horizon=5, num_samples=3,
                                                device="cuda", cuda_graph=True)
    with pytest.raises(OptionError, match=r"the mixture head cannot be captured in a CUDA graph \(it has not"):
        model_of(head="mixture").sample_paths([s], [150], context=20, horizon=5, num_samples=3,
                                              device="cuda", cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph replay needs a CUDA GPU")
@pytest.mark.parametrize("head", ["gaussian", "quantile"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_graph_replay_gives_the_eager_paths_on_cuda(cell, head):
    series = [Series("a", seasonal_ar(200).values), Series("b", seasonal_ar(200, seed=1).values)]
    model = model_of(cell, head, growth=(2,), embed=2, device="cuda")
    kw = dict(context=20, horizon=12, num_samples=50, device="cuda")

    def paths(graph, seed=0):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        return model.sample_paths(series, [150, 180], generator=gen, cuda_graph=graph, **kw)

    eager = paths(False)
    np.testing.assert_array_equal(paths(True), eager)
    np.testing.assert_array_equal(paths(None), eager)  # the cached graph, replayed again
    with torch.no_grad():
        model.readout.delta.mul_(0.5)  # a new weights version: captured again
    np.testing.assert_array_equal(paths(True, 1), paths(False, 1))


def test_a_failed_capture_warns_and_steps_op_by_op_unless_the_graph_was_demanded(monkeypatch):
    """The CPU stands in for a GPU whose capture fails: the step's CudaGraph raises."""
    import rnnforge.engines.decode as decode

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(decode, "CudaGraph", refuse)
    model = model_of("lstm", "quantile")
    buf, phase, u, state = inputs(model)
    want = plain_loop(model, buf, phase, u, state, None)
    for strict in (False, True):
        run = Rollout(model, buf.shape[0], phase.shape[1], False, graph=True, strict=strict)
        with torch.no_grad():
            if strict:
                with pytest.raises(RuntimeError, match="capture refused"):
                    run(buf, phase, u, state, None)
                continue
            with pytest.warns(RuntimeWarning, match=r"sample_paths: the CUDA graph capture failed"):
                got = run(buf, phase, u, state, None)
        assert torch.equal(got.nan_to_num(), want.nan_to_num()) and not run.graph
