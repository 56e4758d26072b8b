"""`lstmkit forecast`'s settings as one dataclass: the data, the model, training and the backtest."""
from __future__ import annotations

from dataclasses import dataclass

from lstmkit.config import MAX_LSTM_WEIGHTS, MAX_SIZE, POSITIVE, SEED, Checked, Range, option, structures


def shipped() -> tuple[str, ...]:
    from lstmkit.forecast.shipped import SHIPPED
    return tuple(SHIPPED)


@dataclass
class ForecastConfig(Checked):
    """What is forecast, by which model, trained how, and how it is judged."""

    series: str = option("co2", "a series shipped with statsmodels (used when --data is empty)",
                         choices=shipped)
    data: str = option("", "a CSV file with a header line; empty: --series")
    column: tuple = option((), "the CSV column to forecast; repeat for several series (one global model); "
                               "none given: every column but the time and id columns")
    time_column: str = option("", "the CSV column of timestamps (rows are sorted by it; its spacing gives the "
                                  "frequency and the season); empty: rows are consecutive steps")
    id_column: str = option("", "a long-format CSV: the column naming each row's series (one --column of values)")
    period: int = option(0, "season length m in steps (12 for monthly data); 0: from the frequency (none "
                            "without a --time-column)", range=Range(0, 10 ** 4))
    horizon: int = option(0, "steps to forecast; 0: one season (the period), or 8 without one",
                          range=Range(0, 10 ** 4))
    origins: int = option(4, "backtest: forecast origins, one horizon apart, over the end of each series",
                          range=Range(1, 1000))
    window: int = option(0, "past steps the model sees (L); 0: three seasons, or 24 without a season",
                         range=Range(0, 10 ** 5))
    interval: float = option(0.8, "nominal coverage of the prediction interval (its quantiles are trained "
                                  "with the pinball loss)", range=Range(0, 1, low_open=True, high_open=True))
    hidden_size: int = option(64, "LSTM hidden units per layer (H)", aliases=("hidden",),
                              range=Range(1, MAX_SIZE))
    num_layers: int = option(1, "stacked LSTM layers", aliases=("layers",), range=Range(1, 16))
    proj_size: int = option(0, "LSTM projection size P; 0: none", aliases=("proj",), range=Range(0, MAX_SIZE))
    dropout: float = option(0.0, "dropout between LSTM layers", range=Range(0, 1, high_open=True))
    structure: str = option("dense", "how the LSTM's weight matrices are stored", choices=structures)
    layer_norm: bool = option(False, "layer-normalized LSTM (Ba et al. 2016): LayerNorm on W_ih x_t, W_hh h_{t-1} "
                                     "and the cell before its tanh")
    cell_zoneout: float = option(0.0, "zoneout (Krueger et al. 2017): probability that a cell unit keeps its "
                                      "previous value at a training step", range=Range(0, 1))
    hidden_zoneout: float = option(0.0, "zoneout: probability that a hidden unit keeps its previous value at a "
                                        "training step", range=Range(0, 1))
    calibrate: bool = option(True, "widen or narrow the interval to cover --interval of the validation windows "
                                   "(conformalized quantile regression)")
    ensemble: int = option(5, "models trained from different seeds; their quantiles are averaged",
                           range=Range(1, 100))
    epochs: int = option(300, "most passes over the training windows", range=Range(1, 10 ** 6))
    patience: int = option(30, "early stopping: epochs without a better validation loss before stopping",
                           range=Range(1, 10 ** 6))
    batch_size: int = option(32, "windows per optimizer step", range=Range(1, 10 ** 6))
    lr: float = option(3e-3, "AdamW learning rate", range=POSITIVE)
    weight_decay: float = option(1e-4, "AdamW decoupled weight decay", range=Range(0, 100))
    seed: int = option(0, "random seed (initialization and batch order)", range=SEED)
    threads: int = option(1, "torch threads while training (a small LSTM runs fastest on one); 0: torch's default",
                          range=Range(0, 4096))
    out: str = option("", "run folder; empty: runs/forecast/<timestamp>")
    predict: bool = option(False, "with RUN: forecast --horizon steps past the end of the data with the saved model")
    json: bool = option(False, "print one JSON object (methods -> mae, smape, mase, coverage) instead of the table")
    baselines: bool = option(True, "backtest the classical baselines too (seasonal naive, ETS, ARIMA)")
    dry_run: bool = option(False, "a tiny model, a few epochs, one ensemble member: the pipeline in seconds")

    def __post_init__(self):
        super().__post_init__()
        from lstmkit.forecast.model import EMBED
        output = self.proj_size or self.hidden_size  # P or H
        count = self.ensemble * self.num_layers * 4 * self.hidden_size * (max(EMBED, output) + output)
        if count > MAX_LSTM_WEIGHTS:
            raise ValueError(f"--ensemble {self.ensemble} models of --hidden-size {self.hidden_size}, --num-layers "
                             f"{self.num_layers}, --proj-size {self.proj_size} make about {count:,} LSTM weights; "
                             f"expected at most {MAX_LSTM_WEIGHTS:,} (8 GiB of float32)")
