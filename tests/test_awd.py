"""AWD-LSTM regularizers in the language model (issue 15): weight drop, locked and embedding dropout; the train
flags for them and for layer norm and zoneout; checkpoints, --structure and compress with them."""
import json

import pytest
import torch

import lstmkit
from lstmkit.config import ModelConfig
from lstmkit.engine import native
from lstmkit.models import LanguageModel
from lstmkit.locked_dropout import locked_dropout
from lstmkit.models.regularizers import embedding_dropout, recurrent_weights, run_with, weight_drop
from lstmkit.sample import load_language_model
from assertions import assert_rel
from train_helpers import TINY, lstmkit as cli, small_corpus

AWD = ["--layer-norm", "--cell-zoneout", "0.1", "--hidden-zoneout", "0.05", "--weight-drop", "0.3",
       "--locked-input-dropout", "0.2", "--locked-output-dropout", "0.25", "--embedding-dropout", "0.1"]


def test_locked_dropout_one_mask_per_sequence():
    x = torch.rand(7, 5, 16) + 1  # no zeros of its own
    y = locked_dropout(x, 0.5, True)
    ratio = y / x  # (T, B, F): the mask
    assert torch.equal(ratio, ratio[:1].expand_as(ratio))  # the same at every step
    assert set(ratio.unique().tolist()) <= {0.0, 2.0} and 0.3 < (ratio == 0).float().mean() < 0.7
    assert torch.equal(locked_dropout(x, 0.5, False), x)


def test_embedding_dropout_drops_whole_tokens():
    emb = torch.nn.Embedding(10, 6)
    x = torch.arange(10).repeat(4, 1)  # (4, 10): every token at every step
    torch.manual_seed(0)
    e = embedding_dropout(emb, x, 0.5, True)  # (4, 10, 6)
    dropped = (e == 0).all(-1)  # (4, 10)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped)) and 0 < dropped[0].sum() < 10
    kept = ~dropped[0]
    assert_rel(e[0, kept], emb.weight[kept] * 2, 1e-6, "kept rows, scaled by 1/(1-p)")
    assert torch.equal(embedding_dropout(emb, x, 0.5, False), emb(x))


@pytest.mark.parametrize("structure", [None, lstmkit.LowRank(rank=3)])
def test_weight_drop_is_the_tensor_the_engine_takes(structure):
    """The LSTM run with the dropped W_hh equals an LSTM whose W_hh is that tensor, on the native loop; the
    gradient reaching W_hh is the dropped weight's, through the mask."""
    lstm = lstmkit.LSTM(4, 8, 2, recurrent=structure)
    names = recurrent_weights(lstm)
    assert names == (["weight_hh_l0", "weight_hh_l1"] if structure is None else
                     [f"weight_hh_l{k}.{p}" for k in range(2) for p, _ in lstm.weight_hh_l0.named_parameters()])
    x = torch.randn(6, 3, 4)
    torch.manual_seed(0)
    dropped = weight_drop(lstm, 0.5, True)
    for name in names:
        mask = dropped[name] / lstm.get_parameter(name)
        assert set(mask.detach().unique().tolist()) <= {0.0, 2.0}
    out = run_with(lstm, dropped, x)[0]
    twin = lstmkit.LSTM(4, 8, 2, recurrent=structure)
    twin.load_state_dict({**lstm.state_dict(), **{n: t.detach() for n, t in dropped.items()}})
    assert_rel(out, twin(x)[0], 1e-6, "output with the dropped W_hh")
    g = torch.autograd.grad(out.sum(), lstm.get_parameter(names[0]))[0]
    g_twin = torch.autograd.grad(twin(x)[0].sum(), twin.get_parameter(names[0]))[0]
    assert_rel(g, g_twin * dropped[names[0]].detach() / lstm.get_parameter(names[0]).detach(), 1e-5, "dW_hh")
    if structure is None and native.available():
        assert native.supports(x.view(-1, 4), torch.zeros(3, 8), torch.zeros(3, 8), lstm.weight_ih_l0,
                               dropped["weight_hh_l0"])
    assert weight_drop(lstm.eval(), 0.5, False) == {}


def test_language_model_uses_them_in_training_only():
    cfg = ModelConfig(hidden_size=8, embedding_dim=4, num_layers=2, weight_drop=0.5, locked_input_dropout=0.3,
                      locked_output_dropout=0.3, embedding_dropout=0.2, layer_norm=True, hidden_zoneout=0.2)
    model = LanguageModel(11, cfg)
    assert model.lstm.layer_norm and model.lstm.hidden_zoneout == 0.2
    x = torch.randint(0, 11, (5, 3))
    torch.manual_seed(1)
    a = model(x)[0]
    torch.manual_seed(1)
    assert torch.equal(model(x)[0], a)  # seeded: the same masks
    assert not torch.equal(model(x)[0], a)  # fresh masks every call
    model.eval()
    plain = LanguageModel(11, ModelConfig(hidden_size=8, embedding_dim=4, num_layers=2, layer_norm=True,
                                          hidden_zoneout=0.2)).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model(x)[0], plain(x)[0])  # eval: no dropout of any kind


def test_train_resume_sample_and_compress(tmp_path, capsys):
    corpus = small_corpus(tmp_path)
    run = tmp_path / "run"
    assert cli("train", "--data", corpus, *TINY, *AWD, "--steps", "3", "--sample-length", "5", "--out", run) == 0
    saved = json.loads((run / "config.json").read_text())["model"]
    assert saved["layer_norm"] is True and saved["weight_drop"] == 0.3 and saved["hidden_zoneout"] == 0.05
    model, _ = load_language_model(str(run))
    assert model.lstm.layer_norm and model.lstm.cell_zoneout == 0.1
    assert not torch.equal(model.lstm.layer_norm_c_l0.weight, torch.ones(24))  # trained, and loaded
    assert cli("train", "--resume", run, "--steps", "5") == 0
    assert cli("compress", run, "--out", tmp_path / "small", "--to", "lowrank:4", "--repeats", "1",
               "--eval-batches", "2") == 0
    small, _ = load_language_model(str(tmp_path / "small"))
    assert small.lstm.layer_norm and small.lstm.hidden_zoneout == 0.05
    trained, _ = load_language_model(str(run))
    for name in ("layer_norm_ih_l0", "layer_norm_hh_l0", "layer_norm_c_l0"):  # carried over by the conversion
        for p in ("weight", "bias"):
            assert torch.equal(trained.lstm.get_parameter(f"{name}.{p}"), small.lstm.get_parameter(f"{name}.{p}"))
    assert cli("compress", run, "--out", tmp_path / "tuned", "--prune", "0.5", "--finetune-steps", "2",
               "--repeats", "1", "--eval-batches", "2") == 0
    assert cli("train", "--data", corpus, *TINY, *AWD, "--structure", "lowrank", "--steps", "2", "--sample-length",
               "0", "--out", tmp_path / "lowrank") == 0


@pytest.mark.parametrize("flag,value", [("--cell-zoneout", "1.5"), ("--hidden-zoneout", "nan"),
                                        ("--weight-drop", "1"), ("--locked-input-dropout", "-0.1"),
                                        ("--embedding-dropout", "inf")])
def test_bad_flags(tmp_path, capsys, flag, value):
    assert cli("train", "--dry-run", flag, value, "--out", tmp_path / "r") == 2
    assert flag in capsys.readouterr().err


def test_tasks_refuse_the_language_model_regularizers(tmp_path, capsys):
    assert cli("train", "--task", "adding", "--dry-run", "--weight-drop", "0.2", "--out", tmp_path / "r") == 2
    assert "--weight-drop" in capsys.readouterr().err
