"""A forecaster with a series embedding exports with the embedding rows as an input."""

import torch

from rnnforge.export import export_run
from rnnforge.forecast import checkpoint as fcheckpoint
from rnnforge.forecast.model import Forecaster, ModelConfig


def test_forecaster_with_series_embedding_to_pt2(tmp_path):
    torch.manual_seed(2)
    model = Forecaster(ModelConfig(cell="lstm", hidden=4, layers=2, series_embedding=3,
                                   series_names=["a", "b", "c"])).eval()
    fcheckpoint.save(tmp_path / fcheckpoint.FILENAME, model, {})
    out, kind = export_run(tmp_path)
    assert kind == "forecaster"
    program = torch.export.load(out).module()
    x, ids = torch.randn(3, 7, model.spec.num_inputs), torch.tensor([2, 0, 2])
    h, c = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    params, h_n, c_n = program(x, ids, h, c)
    with torch.no_grad():
        e = model.series_embed.weight[ids][:, None].expand(-1, 7, -1)  # each row's vector at every step
        want, (wh, wc) = model.rnn(torch.cat([x, e], -1), (h, c))
        torch.testing.assert_close(params, model.readout(want), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c_n, wc, atol=1e-5, rtol=1e-5)
        # starting from zeros it is the teacher-forced network
        z = torch.zeros(2, 3, 4)
        torch.testing.assert_close(program(x, ids, z, z)[0], model(x, ids), atol=1e-5, rtol=1e-5)
