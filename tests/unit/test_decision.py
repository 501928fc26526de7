"""The O bias (`model.decision`): folded into the CRF it decodes exactly as shifted emissions do,
and the bias chosen on held-out titles scores there as the folded tagger does."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torchcrf import CRF  # noqa: E402

from model.decision import choose_o_bias, fold_o_bias  # noqa: E402


@pytest.mark.parametrize("bias", [-0.75, 0.5, 2.0])
def test_a_folded_bias_decodes_and_scores_every_path_as_shifted_o_emissions(bias):
    torch.manual_seed(3)
    crf = CRF(5, batch_first=True)
    emissions = torch.randn(4, 7, 5) * 2
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 1:] = False
    shifted = emissions.clone()
    shifted[..., 0] -= bias
    tags = torch.randint(0, 5, (4, 7))
    expected_paths = crf.decode(shifted, mask=mask)
    expected_llh = crf(shifted, tags, mask=mask, reduction="none")
    fold_o_bias(crf, bias)
    assert crf.decode(emissions, mask=mask) == expected_paths
    assert torch.allclose(crf(emissions, tags, mask=mask, reduction="none"), expected_llh, atol=1e-5)


def test_the_chosen_bias_is_the_best_held_out_f1_and_the_folded_tagger_scores_it(tmp_path):
    from model.data import load_examples
    from model.train import TrainConfig, evaluate_model, load_checkpoint, train
    from tests.conftest import write_synth

    dev_file = write_synth(tmp_path / "dev.jsonl", 60, seed=12)
    train(TrainConfig(train=(str(write_synth(tmp_path / "train.jsonl", 120, seed=11)),), dev=str(dev_file),
                      out=str(tmp_path / "ck"), layers=1, hidden=32, heads=2, epochs=2, batch_size=16, threads=2,
                      vocab_size=1500), log=lambda _: None)
    checkpoint = load_checkpoint(tmp_path / "ck")
    dev = load_examples([str(dev_file)])
    choice = choose_o_bias(checkpoint.model, checkpoint.encoder, checkpoint.labels, dev, biases=(-0.5, 0.5, 1.0, 2.0))
    assert set(choice.scores) == {-0.5, 0.0, 0.5, 1.0, 2.0}
    assert choice.after.micro.f1 == max(s.micro.f1 for s in choice.scores.values()) >= choice.before.micro.f1
    fold_o_bias(checkpoint.model.crf, choice.bias)
    folded = evaluate_model(checkpoint.model, checkpoint.encoder, checkpoint.labels, dev)
    assert folded.micro.f1 == pytest.approx(choice.after.micro.f1)
    assert choice.to_json()["o_bias"] == choice.bias
