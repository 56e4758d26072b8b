"""Locked (variational) dropout between stacked layers, `lstmkit.LSTM(..., dropout=p, locked_dropout=True)`:
one mask per sequence for all its steps, padded and packed, equal to the two layers run by hand with that mask;
and the language model's `--locked-hidden-dropout` (AWD-LSTM's dropouth)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.config import ModelConfig
from lstmkit.models import LanguageModel
from assertions import assert_rel
from train_helpers import lstmkit as cli

T, B, I, H, p = 7, 4, 5, 6, 0.5


def stacked_and_layers(bidirectional=False):
    torch.manual_seed(0)
    model = lstmkit.LSTM(I, H, 2, dropout=p, locked_dropout=True, bidirectional=bidirectional).double().train()
    D = 2 if bidirectional else 1
    first = lstmkit.LSTM(I, H, 1, bidirectional=bidirectional).double()
    second = lstmkit.LSTM(D * H, H, 1, bidirectional=bidirectional).double()
    state = model.state_dict()
    for k, layer in enumerate((first, second)):
        layer.load_state_dict({name.replace(f"_l{k}", "_l0"): w for name, w in state.items() if f"_l{k}" in name})
    return model, first, second


def draw_mask(seed, width):
    """The mask the layer draws first in its forward for these shapes (torch's generator, seeded)."""
    torch.manual_seed(seed)
    return torch.empty(B, width, dtype=torch.float64).bernoulli_(1 - p) / (1 - p)  # (B, D*H)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_equals_the_layers_with_one_mask_per_sequence(bidirectional):
    model, first, second = stacked_and_layers(bidirectional)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(5)
    y, (h, c) = model(x)
    mask = draw_mask(5, (2 if bidirectional else 1) * H)
    assert 0 < (mask == 0).float().mean() < 1
    want, (h1, c1) = second(first(x)[0] * mask)  # (T, B, D*H) * (B, D*H): the same mask at every step
    assert_rel(y, want, 1e-12, "output")
    assert_rel(h[-1], h1[-1], 1e-12, "h_n of the top layer")


def test_packed_rows_take_their_sequence_mask():
    model, first, second = stacked_and_layers()
    lengths = torch.tensor([7, 5, 5, 2])  # sorted: row b of every step is sequence b
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(3)
    y, _ = model(pack_padded_sequence(x, lengths))
    mask = draw_mask(3, H)
    y0, _ = pad_packed_sequence(first(pack_padded_sequence(x, lengths))[0])
    want, _ = second(pack_padded_sequence(y0 * mask, lengths))
    assert_rel(y.data, want.data, 1e-12, "packed output")


def test_eval_drops_nothing_and_plain_dropout_differs():
    model, first, second = stacked_and_layers()
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert_rel(model.eval()(x)[0], second(first(x)[0])[0], 1e-12, "eval")
    model.train()
    torch.manual_seed(5)
    locked = model(x)[0]
    model.locked_dropout = False
    torch.manual_seed(5)
    assert not torch.allclose(model(x)[0], locked), "the per-step mask should differ from the locked one"
    with pytest.warns(UserWarning, match="one per sequence"):
        lstmkit.LSTM(I, H, 2, dropout=p, locked_dropout=True).to_torch()


def test_the_language_model_flag():
    lm = LanguageModel(20, ModelConfig(hidden_size=8, num_layers=2, dropout=0.1, locked_hidden_dropout=0.3,
                                       embedding_dim=4))
    assert (lm.lstm.dropout, lm.lstm.locked_dropout, lm.dropout.p) == (0.3, True, 0.1)
    plain = LanguageModel(20, ModelConfig(hidden_size=8, num_layers=2, dropout=0.1, embedding_dim=4))
    assert (plain.lstm.dropout, plain.lstm.locked_dropout) == (0.1, False)
    with pytest.raises(ValueError, match="--locked-hidden-dropout 0.3 drops between stacked LSTM layers; expected "
                                         "--num-layers 2 or more, given --num-layers 1"):
        ModelConfig(locked_hidden_dropout=0.3)


def test_train_runs_with_it(tmp_path, capsys):
    code = cli("train", "--hidden", "8", "--layers", "2", "--locked-hidden-dropout", "0.2", "--bptt", "8",
               "--batch-size", "4", "--steps", "2", "--eval-interval", "2", "--sample-length", "0",
               "--out", str(tmp_path / "run"))
    assert code == 0
    assert "locked_hidden_dropout" in (tmp_path / "run" / "config.json").read_text()
