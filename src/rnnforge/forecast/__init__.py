"""Probabilistic forecasting with the notes' cells (DeepAR-style, Salinas et al. 2020).

    data      rnnforge.forecast.series: shipped series (sunspots, co2) and CSV loading
    features  transforms (none, diff, detrend), scaling, lagged values, seasonal position
    heads     distribution heads (gaussian, student-t, quantile) and their registry
    model     Forecaster (cell -> readout δ -> head), ancestral sampling, Ensemble
    train     window sampling, training with early stopping, checkpoints
    metrics   CRPS, weighted quantile loss, coverage, PIT
    baselines seasonal naive, ETS, ARIMA, GluonTS DeepAR
    evaluate  quantile CSV and fan charts; rolling-origin evaluation and report

The command line is ``rnnforge forecast train | predict | evaluate``; the guide
is docs/forecast.md.
"""
