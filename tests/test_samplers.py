"""The P x K batch sampler (#24): over 1,000 batches every batch holds P distinct identities with K
records each, classes are drawn uniformly (counts within 5 standard deviations of the binomial
mean), the same seed gives the same batches; through make_dataset the batches are the sampler's,
class by class, and a stream started at batch 3 (a resume) continues the same sequence; bad input is
one line each."""
import numpy as np
import pytest

from recface_lib.data.samplers import make_sampler, record_labels
from recface_lib.errors import ConfigError


def _labels():
    rng = np.random.default_rng(0)
    sizes = np.r_[rng.integers(4, 30, size=40), [1, 2, 3]]  # three classes shorter than K = 4
    return rng.permutation(np.repeat(np.arange(len(sizes)), sizes)), sizes


@pytest.mark.parametrize("short", ["replace", "skip"])
def test_pk_batches_hold_p_identities_of_k_and_classes_are_uniform(short):
    labels, sizes = _labels()
    s = make_sampler("pk", labels, 32, seed=4, k=4, short=short)
    assert (s.p, s.k) == (8, 4)
    seen = np.zeros(len(sizes), int)
    for b in range(1000):
        rows = s.rows(b)
        y = labels[rows]
        assert len(rows) == 32
        groups = y.reshape(8, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 8  # class by class, P distinct
        for c in groups[:, 0]:
            seen[c] += 1
            if sizes[c] >= 4:  # without replacement where the class has K
                assert len(set(rows[y == c])) == 4
    eligible = sizes >= (4 if short == "skip" else 1)
    assert not seen[~eligible].any()
    mean = 1000 * 8 / eligible.sum()
    sd = np.sqrt(mean * (1 - 8 / eligible.sum()))
    print(f"{short}: class counts {seen[eligible].min()}..{seen[eligible].max()}, binomial mean {mean:.1f} sd {sd:.1f}")
    assert np.abs(seen[eligible] - mean).max() < 5 * sd
    same = make_sampler("pk", labels, 32, seed=4, k=4, short=short)
    assert all(np.array_equal(s.rows(b), same.rows(b)) for b in (0, 7, 999))
    assert not np.array_equal(s.rows(0), make_sampler("pk", labels, 32, seed=5, k=4, short=short).rows(0))


def test_pk_stream_through_make_dataset_and_resume(ds):
    from recface_lib.data.input_pipeline import Augmentation, make_dataset
    from recface_lib.data.tfrecord import load_metadata

    labels = record_labels(load_metadata(ds))
    s = make_sampler("pk", labels, 16, seed=1, k=4)
    kw = {"training": True, "image_size": 32, "sampler": s, "augment": Augmentation.from_dict({"flip": True})}
    full = [(x.numpy(), y.numpy()) for x, y in make_dataset(ds, 16, **kw).take(5)]
    for b, (_, y) in enumerate(full):
        assert np.array_equal(y, labels[s.rows(b)])
        assert len(set(y.reshape(4, 4)[:, 0])) == 4 and (y.reshape(4, 4) == y.reshape(4, 4)[:, :1]).all()
    resumed = [(x.numpy(), y.numpy()) for x, y in make_dataset(ds, 16, start=3 * 16, **kw).take(2)]
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)  # same records, same augmentation


def test_pk_bad_input_is_one_line():
    labels, sizes = _labels()
    with pytest.raises(ConfigError, match=r"^sampler pk: dataset has 43 classes with any images \(most images in a "
                                          r"class: \d+\), fewer than the P = 50 identities a batch of 200 needs$"):
        make_sampler("pk", labels, 200, k=4)
    with pytest.raises(ConfigError, match=r"^sampler pk: dataset has 0 classes with >= 40 images"):
        make_sampler("pk", labels, 80, k=40, short="skip")
    with pytest.raises(ConfigError, match=r"^sampler pk: batch_size 30 is not a multiple of k = 4"):
        make_sampler("pk", labels, 30, k=4)
    with pytest.raises(ConfigError, match=r"^sampler_params: unknown key\(s\) 'p' for sampler pk; valid: k, short$"):
        make_sampler("pk", labels, 32, p=8)
    with pytest.raises(ConfigError, match=r"^sampler pk: P = 3 identities per batch do not split over 2 replicas"):
        make_sampler("pk", labels, 12, replicas=2, k=4)
    with pytest.raises(ConfigError, match=r"^sampler: unknown 'hard'; valid: shuffle, pk$"):
        make_sampler("hard", labels, 32)
