"""The native engine (engines/native.py): what torch's kernels cannot run is refused, not rerouted.

Its numbers are checked in test_engines.py's matrix against the reference engine.
"""

import pytest
import torch

from rnnforge.engines import ENGINES
from rnnforge_testing import make_layer


def test_native_refuses_the_sigmoid_rnn():
    layer = make_layer("rnn_sigmoid", 3, 4, engine="native")
    assert "sigmoid" in ENGINES["native"].why_not(layer, torch.randn(5, 2, 3), None)
    with pytest.raises(ValueError, match=r"engine 'native' cannot run this RNN: .*sigmoid"):
        layer(torch.randn(5, 2, 3))
    assert layer.engine_used is None  # nothing ran, nothing fell back
