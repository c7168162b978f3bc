"""The reference engine (engines/reference.py) runs every request.

Its numbers are checked against torch.nn in tests/test_layers.py, and every
other engine against it in test_engines.py.
"""

import torch

from rnnforge.engines import ENGINES
from rnnforge_testing import MODES, make_layer


def test_reference_runs_everything():
    for mode in MODES:
        layer = make_layer(mode, 3, 4, bidirectional=True)
        assert ENGINES["reference"].why_not(layer, torch.randn(2, 2, 3), torch.tensor([2, 1])) is None
