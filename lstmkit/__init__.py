"""lstmkit: LSTM networks from the equations up."""
__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from lstmkit.cell import LSTMCell, lstm_pointwise, lstm_step
from lstmkit.layer import LSTM
from lstmkit.maps import Circulant, Conv, Coupled, Diagonal, Grouped, LowRank, SharedGates
from lstmkit.maps import Sparse
from lstmkit.packing import pack_padded_sequence
from lstmkit.params import count_parameters

__all__ = ["LSTM", "LSTMCell", "lstm_pointwise", "lstm_step", "pack_padded_sequence",
           "LowRank", "Grouped", "Diagonal", "Circulant", "SharedGates", "Coupled", "Conv", "count_parameters"]
__all__ += ["Sparse"]
