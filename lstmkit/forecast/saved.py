"""A forecast run's checkpoint: the config, the shape, the series (so --predict needs no data file), the scales and
every ensemble member's weights, in one lstmkit safetensors checkpoint (lstmkit.checkpoint), checked on loading."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from torch import nn

from lstmkit import config, schema
from lstmkit.checkpoint import checkpoint_path, load_checkpoint, load_weights
from lstmkit.forecast.config import ForecastConfig
from lstmkit.forecast.lstm import LSTMMethod, Shape
from lstmkit.forecast.series import Series

KIND = "lstmkit-forecast"  # metadata/kind: a forecast run, not a `train` run


def state(method: LSTMMethod, series: list[Series]) -> dict:
    """What a run folder's checkpoint holds."""
    return {"config": {"forecast": dataclasses.asdict(method.cfg)},
            "metadata": {"kind": KIND, "shape": dataclasses.asdict(method.shape), "scales": method.scales,
                         "widen": method.widen,
                         "series": [s.to_dict() for s in series],
                         "best_epochs": [f.best_epoch for f in method.fits]},
            "trainer": {"model": nn.ModuleList(method.members).state_dict()}}


def load(run: str) -> tuple[LSTMMethod, list[Series]]:
    """The trained method and its series from a run folder (or checkpoint file) written by `lstmkit forecast`."""
    source = str(checkpoint_path(run))
    if not Path(run).exists():
        raise FileNotFoundError(f"{run} does not exist; expected a run folder written by `lstmkit forecast`")
    saved = load_checkpoint(run)
    if schema.section(saved, "metadata", dict, source).get("kind") != KIND:
        raise ValueError(f"{source} is not a forecast run (metadata/kind is {saved['metadata'].get('kind')!r}); "
                         "expected a run folder written by `lstmkit forecast`")
    values = dict(schema.section(saved, "config/forecast", dict, source))
    values["column"] = tuple(values.get("column", ()))  # a JSON list
    cfg = config.from_dict(ForecastConfig, values, f"{source} forecast config")
    try:
        shape = Shape(**schema.section(saved, "metadata/shape", dict, source))
        scales = {str(k): float(v) for k, v in schema.section(saved, "metadata/scales", dict, source).items()}
        widen = float(schema.section(saved, "metadata/widen", float, source))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: metadata/shape or scales is damaged ({e}); expected the sizes and scales "
                         "`lstmkit forecast` saves") from None
    series = [Series.from_dict(d, source) for d in schema.section(saved, "metadata/series", list, source)]
    stored = schema.weights(saved, source)
    schema.fits(lambda: nn.ModuleList(LSTMMethod(cfg, shape).members), stored, source)  # on meta: no memory yet
    method = LSTMMethod(cfg, shape)
    load_weights(nn.ModuleList(method.members), stored, source)
    method.scales, method.widen = scales, widen
    if not all(math.isfinite(v) for v in (widen, *scales.values())):
        raise ValueError(f"{source}: metadata/widen or scales is not finite; expected finite numbers")
    missing = [s.name for s in series if s.name not in scales]
    if missing:
        raise ValueError(f"{source}: no scale saved for series {missing}; expected one per saved series")
    return method, series
