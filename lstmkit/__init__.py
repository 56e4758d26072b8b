"""lstmkit: LSTM networks from the equations up."""
from lstmkit.cell import LSTMCell, lstm_pointwise, lstm_step
from lstmkit.layer import LSTM
from lstmkit.packing import pack_padded_sequence

__all__ = ["LSTM", "LSTMCell", "lstm_pointwise", "lstm_step", "pack_padded_sequence"]
