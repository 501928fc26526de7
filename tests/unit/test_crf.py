"""stream.tagging.crf against a brute-force oracle over all tag paths, and against torchcrf."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.tagging.crf import (
    CrfParams,
    marginals,
    path_probabilities,
    sequence_log_partition,
    span_confidence,
    viterbi_decode,
)


def random_params(rng: np.random.Generator, tags: int) -> CrfParams:
    return CrfParams(rng.normal(size=(tags, tags)), rng.normal(size=tags), rng.normal(size=tags))


def random_batch(rng, batch, seq, tags, allow_empty=True):
    emissions = rng.normal(size=(batch, seq, tags)) * 2
    lengths = rng.integers(0 if allow_empty else 1, seq + 1, size=batch)
    mask = np.arange(seq)[None, :] < lengths[:, None]
    return emissions, mask


def path_score(emissions: np.ndarray, path, crf: CrfParams) -> float:
    """Score of one tag path for one item's unpadded (len, tags) emissions."""
    e = emissions.astype(np.float64)
    s = float(crf.start[path[0]]) + float(crf.end[path[-1]])
    s += sum(float(e[t, y]) for t, y in enumerate(path))
    s += sum(float(crf.transitions[a, b]) for a, b in zip(path, path[1:]))
    return s


def brute_force(emissions: np.ndarray, length: int, crf: CrfParams):
    """(best path, marginals (length, tags), log Z) by enumerating every tag path."""
    if length == 0:
        return [], np.zeros((0, crf.num_tags)), 0.0
    paths = list(itertools.product(range(crf.num_tags), repeat=length))
    scores = np.array([path_score(emissions[:length], p, crf) for p in paths])
    log_z = np.logaddexp.reduce(scores)
    probs = np.exp(scores - log_z)
    marg = np.zeros((length, crf.num_tags))
    for p, pr in zip(paths, probs):
        marg[np.arange(length), list(p)] += pr
    return list(paths[int(scores.argmax())]), marg, log_z


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    tags, seq = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    crf = random_params(rng, tags)
    emissions, mask = random_batch(rng, 4, seq, tags)

    paths = viterbi_decode(emissions, mask, crf)
    marg = marginals(emissions, mask, crf)
    log_z = sequence_log_partition(emissions, mask, crf)

    for b, length in enumerate(mask.sum(axis=1)):
        best, want_marg, want_log_z = brute_force(emissions[b], length, crf)
        assert paths[b] == best
        np.testing.assert_allclose(marg[b, :length], want_marg, atol=1e-6)
        assert np.all(marg[b, length:] == 0)
        assert log_z[b] == pytest.approx(want_log_z, abs=1e-6)


def test_matches_torchcrf():
    torch = pytest.importorskip("torch")
    torchcrf = pytest.importorskip("torchcrf")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for tags, seq in [(1, 4), (3, 1), (5, 7), (9, 12)]:
        model = torchcrf.CRF(tags, batch_first=True)
        with torch.no_grad():
            for p in (model.transitions, model.start_transitions, model.end_transitions):
                p.normal_()
        crf = CrfParams(
            model.transitions.detach().numpy(),
            model.start_transitions.detach().numpy(),
            model.end_transitions.detach().numpy(),
        )
        emissions, mask = random_batch(rng, 6, seq, tags, allow_empty=False)
        emissions = emissions.astype(np.float32)
        tag_ids = rng.integers(0, tags, size=(6, seq))

        em_t, mask_t = torch.from_numpy(emissions), torch.from_numpy(mask)
        assert model.decode(em_t, mask_t) == viterbi_decode(emissions, mask, crf)

        llh = model(em_t, torch.from_numpy(tag_ids), mask_t, reduction="none").detach().numpy()
        log_z = sequence_log_partition(emissions, mask, crf)
        ours = [
            path_score(emissions[b, :n], tag_ids[b, :n].tolist(), crf) - log_z[b]
            for b, n in enumerate(mask.sum(axis=1))
        ]
        np.testing.assert_allclose(llh, ours, rtol=1e-4, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 5),
    seq=st.integers(0, 8),
    tags=st.integers(1, 6),
    scale=st.sampled_from([1.0, 30.0, 1e3]),
)
def test_marginals_are_distributions(seed, batch, seq, tags, scale):
    rng = np.random.default_rng(seed)
    crf = random_params(rng, tags)
    emissions, mask = random_batch(rng, batch, seq, tags)
    marg = marginals(emissions * scale, mask, crf)
    assert marg.shape == (batch, seq, tags)
    assert np.all(np.isfinite(marg)) and np.all(marg >= 0)
    np.testing.assert_allclose(marg.sum(axis=2), mask.astype(float), atol=1e-9)
    paths = viterbi_decode(emissions * scale, mask, crf)
    assert [len(p) for p in paths] == mask.sum(axis=1).tolist()
    assert np.all(np.isfinite(sequence_log_partition(emissions * scale, mask, crf)))


def test_empty_sequences():
    rng = np.random.default_rng(1)
    crf = random_params(rng, 3)
    emissions = rng.normal(size=(2, 4, 3))
    mask = np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    assert viterbi_decode(emissions, mask, crf)[0] == []
    assert np.all(marginals(emissions, mask, crf)[0] == 0)
    assert sequence_log_partition(emissions, mask, crf)[0] == 0.0
    assert viterbi_decode(np.zeros((2, 0, 3)), np.zeros((2, 0), bool), crf) == [[], []]


@pytest.mark.parametrize(
    "emissions_shape, mask_shape, match",
    [
        ((2, 4, 5), (2, 4), r"expected shape \(batch, seq, 3\), got \(2, 4, 5\)"),
        ((2, 4), (2, 4), r"expected shape \(batch, seq, 3\), got \(2, 4\)"),
        ((2, 4, 3), (2, 5), r"expected shape \(2, 4\), got \(2, 5\)"),
    ],
)
def test_shape_errors(emissions_shape, mask_shape, match):
    crf = random_params(np.random.default_rng(0), 3)
    for fn in (viterbi_decode, marginals, sequence_log_partition):
        with pytest.raises(ValueError, match=match):
            fn(np.zeros(emissions_shape), np.ones(mask_shape, bool), crf)


def test_mask_must_be_left_aligned():
    crf = random_params(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="left-aligned"):
        viterbi_decode(np.zeros((1, 3, 3)), np.array([[1, 0, 1]], bool), crf)


def test_param_shape_errors():
    with pytest.raises(ValueError, match=r"transitions: expected shape \(3, 3\).*got \(3, 2\)"):
        CrfParams(np.zeros((3, 2)), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"end: expected shape \(3,\).*got \(4,\)"):
        CrfParams(np.zeros((3, 3)), np.zeros(3), np.zeros(4))


def test_npz_round_trip(tmp_path):
    crf = random_params(np.random.default_rng(0), 4)
    path = tmp_path / "crf.npz"
    crf.save_npz(path)
    loaded = CrfParams.from_npz(path)
    assert loaded.num_tags == 4
    for name in ("transitions", "start", "end"):
        got = getattr(loaded, name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, getattr(crf, name))

    np.savez(tmp_path / "bad.npz", transitions=crf.transitions, start_transitions=crf.start)
    with pytest.raises(ValueError, match="expected keys"):
        CrfParams.from_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", transitions=np.zeros((4, 3)),
             start_transitions=crf.start, end_transitions=crf.end)
    with pytest.raises(ValueError, match=r"expected shape \(4, 4\)"):
        CrfParams.from_npz(tmp_path / "bad2.npz")


def test_span_confidence():
    rng = np.random.default_rng(3)
    crf = random_params(rng, 3)
    emissions, mask = random_batch(rng, 1, 5, 3, allow_empty=False)
    mask[:] = True
    marg = marginals(emissions, mask, crf)[0]
    path = viterbi_decode(emissions, mask, crf)[0]
    conf = span_confidence(marg, path, 1, 4)
    assert 0.0 <= conf <= 1.0
    assert conf == pytest.approx(min(marg[t, path[t]] for t in range(1, 4)))
    with pytest.raises(ValueError, match="expected 0 <= start < end <= 5"):
        span_confidence(marg, path, 3, 3)


def test_path_probabilities_give_each_span_its_span_confidence():
    rng = np.random.default_rng(3)
    marg = rng.dirichlet(np.ones(5), size=7)
    path = [int(i) for i in rng.integers(0, 5, size=7)]
    probs = path_probabilities(marg, path)
    for start, end in ((0, 7), (1, 4), (6, 7)):
        assert min(probs[start:end]) == span_confidence(marg, path, start, end)
