"""Time-series forecasting: `lstmkit forecast`, an LSTM backtested against the classical baselines."""
