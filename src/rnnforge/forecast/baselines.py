"""Baselines scored in the same rolling-origin evaluation as the recurrent model.

Each baseline is a function ``(series, origin, horizon) -> forecast`` that sees
only the values before ``origin``, refitted at every origin:

    seasonal-naive  y_{o+k} = the last observed value one or more whole seasons
                    back, with Gaussian errors whose sd grows as sqrt(number of
                    seasons ahead) (Hyndman & Athanasopoulos, FPP3 §5.5), the sd
                    estimated from the history's own one-season-ahead errors;
                    for a series without season: the naive random walk
    ets             statsmodels ETSModel, additive error, damped additive trend,
                    additive season when the series has one; Gaussian forecasts
    arima           statsmodels ARIMA(2,1,1) with drift and 3 Fourier pairs of the
                    seasonal phase as regressors; Gaussian forecasts
    gluonts-deepar  GluonTS's torch DeepAR, trained once before the first origin
                    (only where gluonts[torch] is installed)

The statsmodels ones need the optional extra ``pip install 'rnnforge[forecast]'``;
without it they are skipped with a note. They are fitted to the last
``FIT_WINDOW`` values before the origin (missing values interpolated for ETS).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from typing import Callable

import numpy as np

from .series import Series, freq_minutes
from ..errors import UserError
from .metrics import GaussianForecast

FIT_WINDOW = 600


def seasonal_naive(s: Series, origin: int, horizon: int) -> GaussianForecast:
    v = s.values[:origin]
    m = s.season
    mean = np.empty(horizon)
    for k in range(horizon):
        back = m * (k // m + 1)  # whole seasons back from o + k to before the origin
        j = origin + k - back
        while j >= 0 and not np.isfinite(v[j]):
            j -= m  # a missing value: one more season back
        mean[k] = v[j] if j >= 0 else v[np.isfinite(v)][-1]
    errors = v[m:] - v[:-m]
    errors = errors[np.isfinite(errors)][-FIT_WINDOW:]
    sd = float(np.sqrt(np.mean(errors ** 2))) if errors.size else float(np.nanstd(v))
    std = sd * np.sqrt(np.arange(horizon) // m + 1)
    return GaussianForecast(mean, np.maximum(std, 1e-9))


def _statsmodels():
    try:
        import statsmodels  # noqa: F401
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _history(s: Series, origin: int) -> tuple[np.ndarray, int]:
    start = max(0, origin - FIT_WINDOW)
    return s.values[start:origin], start


def ets(s: Series, origin: int, horizon: int) -> GaussianForecast:
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y, _ = _history(s, origin)
    ok = np.isfinite(y)
    y = np.interp(np.arange(len(y)), np.flatnonzero(ok), y[ok])
    m = s.season
    seasonal = m > 1 and len(y) >= 3 * m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ETSModel(pd.Series(y), error="add", trend="add", damped_trend=True,
                       seasonal="add" if seasonal else None,
                       seasonal_periods=m if seasonal else None).fit(disp=False, maxiter=200)
        pred = fit.get_prediction(start=len(y), end=len(y) + horizon - 1)
        mean = np.asarray(pred.predicted_mean, dtype=np.float64)
        var = np.asarray(pred.forecast_variance, dtype=np.float64)
    return GaussianForecast(mean, np.sqrt(np.maximum(var, 1e-18)))


def fourier_terms(s: Series, start: int, stop: int) -> np.ndarray | None:
    """The ARIMA baseline's regressors for steps ``start..stop`` of s: sine and cosine of the
    seasonal phase at 1, 2 and 3 cycles per season (None without a season)."""
    if s.season <= 1:
        return None
    phase = s.phase(start, stop)
    return np.column_stack([f(2 * math.pi * k * phase) for k in (1, 2, 3) for f in (np.sin, np.cos)])


def arima(s: Series, origin: int, horizon: int) -> GaussianForecast:
    import pandas as pd
    from statsmodels.tsa.arima.model import ARIMA

    y, start = _history(s, origin)
    exog = fourier_terms(s, start, origin + horizon)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ARIMA(pd.Series(y), exog=None if exog is None else exog[:len(y)], order=(2, 1, 1),
                    trend="t").fit()
        pred = fit.get_forecast(horizon, exog=None if exog is None else exog[len(y):])
        mean = np.asarray(pred.predicted_mean, dtype=np.float64)
        var = np.asarray(pred.var_pred_mean, dtype=np.float64)
    return GaussianForecast(mean, np.sqrt(np.maximum(var, 1e-18)))


class GluonTSDeepAR:
    """GluonTS's torch DeepAR (2 LSTM layers of 40, Student-t output, its own lags and
    time features): a global model, trained once on the values before the first
    evaluation origin (``fit``), then asked for sample paths at each origin.
    Needs ``gluonts[torch]`` (with its pandas and lightning), not a dependency of rnnforge.
    """

    global_model = True

    def __init__(self, *, epochs: int = 30, samples: int = 1000, seed: int = 0) -> None:
        self.epochs, self.samples, self.seed = epochs, samples, seed
        self.predictor = None

    @staticmethod
    def _freq(s: Series) -> str:
        if s.freq == "W":  # pandas' weekly periods are anchored on a weekday
            return "W-" + str(s.timestamps[0].astype("datetime64[D]").item().strftime("%a")).upper()
        if freq_minutes(s.freq):  # pandas' aliases: 15min, 3h, and h for an hour
            return "h" if s.freq == "H" else s.freq
        return {"M": "M", "D": "D", "B": "B", "Q": "Q", "Y": "Y"}.get(s.freq, "D")

    def _entry(self, s: Series, stop: int) -> dict:
        import pandas as pd

        freq = self._freq(s)
        start = pd.Period(str(s.timestamps[0]) if s.timestamps is not None else "2000-01-01", freq=freq)
        return {"start": start, "target": s.values[:stop].astype(np.float32), "item_id": s.name}

    def fit(self, train: list[Series], *, context: int, horizon: int) -> None:
        import lightning.pytorch as pl
        from gluonts.dataset.common import ListDataset
        from gluonts.torch.model.deepar import DeepAREstimator

        pl.seed_everything(self.seed, workers=False)
        freq = self._freq(train[0])
        data = ListDataset([self._entry(s, len(s)) for s in train], freq=freq)
        # Lightning keeps the best epoch's weights in checkpoint files under its root folder (the
        # working directory unless told): a folder of our own, gone once the predictor holds them
        with tempfile.TemporaryDirectory(prefix="rnnforge-deepar-") as root:
            est = DeepAREstimator(freq=freq, prediction_length=horizon, context_length=context,
                                  num_layers=2, hidden_size=40,
                                  trainer_kwargs={"max_epochs": self.epochs, "enable_progress_bar": False,
                                                  "logger": False, "accelerator": "cpu",
                                                  "default_root_dir": root})
            self.predictor = est.train(data)

    def __call__(self, s: Series, origin: int, horizon: int):
        from gluonts.dataset.common import ListDataset

        from .metrics import SampleForecast

        ds = ListDataset([self._entry(s, origin)], freq=self._freq(s))
        (f,) = list(self.predictor.predict(ds, num_samples=self.samples))
        return SampleForecast(np.asarray(f.samples, dtype=np.float64)[:, :horizon])


BASELINES: dict[str, Callable] = {
    "seasonal-naive": seasonal_naive,
    "ets": ets,
    "arima": arima,
    "gluonts-deepar": GluonTSDeepAR,
}
NEEDS_STATSMODELS = {"ets", "arima"}


def _gluonts() -> bool:
    try:
        import gluonts.torch  # noqa: F401
    except Exception:  # ImportError, or a broken install of its many dependencies
        return False
    return True


def resolve(names: list[str], log=print, gluonts_kwargs: dict | None = None) -> dict[str, Callable]:
    """The baselines to run; statsmodels ones are dropped with a note when it is missing."""
    out = {}
    for name in names:
        if name not in BASELINES:
            raise UserError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)} (or none)")
        if name in NEEDS_STATSMODELS and not _statsmodels():
            log(f"note: baseline {name!r} skipped: it needs statsmodels "
                f"(pip install 'rnnforge[forecast]')")
            continue
        if name == "gluonts-deepar":
            if not _gluonts():
                log("note: baseline 'gluonts-deepar' skipped: it needs gluonts[torch] (not installed)")
                continue
            out[name] = GluonTSDeepAR(**(gluonts_kwargs or {}))
            continue
        out[name] = BASELINES[name]
    return out
