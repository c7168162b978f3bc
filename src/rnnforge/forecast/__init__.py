"""Probabilistic forecasting with the notes' cells (DeepAR-style, Salinas et al. 2020).

    api        the library calls: train, predict, evaluate; ForecastConfig; plan (window sizes)
    series     shipped series (sunspots, co2) and the CSV reader (frequency, gaps, missing values)
    features   transforms (none, diff, detrend, drift, deseason), scaling, lagged values, season
    heads      distribution heads (gaussian, student-t, quantile) and their registry
    model      Forecaster (cell -> readout δ -> head), ancestral sampling, Ensemble
    trainer    window sampling, training with early stopping, the multi-step objective
    checkpoint saving and loading a forecaster
    metrics    CRPS, weighted quantile loss, coverage, PIT
    baselines  seasonal naive, ETS, ARIMA, GluonTS DeepAR
    backtest   quantile CSV and fan charts; rolling-origin evaluation and report

The command line is ``rnnforge forecast train | predict | evaluate``; the guide
is docs/forecast.md.
"""

from .api import ForecastConfig, Plan, evaluate, plan, predict, train
from .checkpoint import FILENAME, load as load_checkpoint, save as save_checkpoint
from .model import Ensemble, Forecaster, ModelConfig
from .series import Series, load, parse_csv

__all__ = ["FILENAME", "Ensemble", "ForecastConfig", "Forecaster", "ModelConfig", "Plan", "Series", "evaluate",
           "load", "load_checkpoint", "parse_csv", "plan", "predict", "save_checkpoint", "train"]
