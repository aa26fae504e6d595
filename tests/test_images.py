"""Offline image data, the digits classifier, and FID through clean-fid with offline Inception weights."""

import importlib.util

import numpy as np
import scipy.linalg
import pytest
import torch
from PIL import Image

from uniinstruct.images import fid
from uniinstruct.images.classifier import ClassifierConfig, classifier_features, train_classifier
from uniinstruct.images.data import load, one_hot, save_grid, to_uint8, train_test_split



@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def inception():
    return fid.InceptionFeatures(fid.find_weights("packaged"))


def test_digits_ship_offline(digits):
    assert digits.images.shape == (1797, 1, 8, 8) and digits.num_classes == 10
    assert digits.images.min() == -1 and digits.images.max() == 1
    levels = torch.unique(digits.images)
    assert len(levels) == 17                                  # 17 grey levels 0..16
    assert torch.equal(to_uint8(levels), torch.round((levels + 1) * 127.5).to(torch.uint8))
    assert torch.bincount(digits.labels).min() >= 170         # roughly balanced classes


def test_split_is_seeded_and_disjoint(digits):
    train, test = train_test_split(digits, 0.2, seed=3)
    assert len(train.images) + len(test.images) == 1797 and len(test.images) == 359
    rows = {tuple(r.tolist()) for r in train.images.reshape(len(train.images), -1)}
    again, _ = train_test_split(digits, 0.2, seed=3)
    assert torch.equal(train.images, again.images) and len(rows) > 0


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown image data set 'mnist'; valid: digits, lfw"):
        load("mnist")


def test_lfw_loads_or_says_what_to_install():
    if importlib.util.find_spec("skimage") is None:
        with pytest.raises(ImportError, match="pip install scikit-image"):
            load("lfw")
    else:
        faces = load("lfw")
        assert faces.images.shape == (200, 1, 24, 24) and faces.labels is None


def test_one_hot_and_grid(digits, tmp_path):
    assert one_hot(digits.labels[:3], 0) is None
    assert torch.equal(one_hot(torch.tensor([2]), 4), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    save_grid(digits.images[:12], tmp_path / "g.png", nrow=5, scale=2)
    img = np.asarray(Image.open(tmp_path / "g.png"))
    assert img.shape == (2 * (3 * 9 + 1), 2 * (5 * 9 + 1))
    np.testing.assert_array_equal(img[2:18:2, 2:18:2], to_uint8(digits.images[0, 0]).numpy())


def test_classifier_learns_digits(digits):
    net, info = train_classifier(digits, ClassifierConfig(epochs=10, seed=0))
    assert info["test_size"] == 359 and info["test_accuracy"] > 0.9
    assert classifier_features(net, digits.images[:5]).shape == (5, 64)


def test_torchvision_imports_for_clean_fid():
    tv = fid.import_torchvision()
    import cleanfid.fid   # noqa: F401  (imports torchvision itself)

    assert tv.transforms.ToTensor is not None


def test_weights_are_hash_checked(tmp_path):
    packaged = fid.find_weights("packaged")
    assert packaged.sha256 == fid.PACKAGED_SHA256 and not packaged.describe()["official"]
    fake = tmp_path / fid.OFFICIAL_NAME
    fake.write_bytes(b"not the network")
    with pytest.raises(ValueError, match="expected f58cb9b6"):
        fid.find_weights(str(fake))
    assert fake.exists()     # a user's file is refused, never deleted
    with pytest.raises(FileNotFoundError):
        fid.find_weights(str(tmp_path / "missing.pt"))


def test_frechet_distance_matches_the_closed_form():
    """Diagonal Gaussians: FD = ‖μ₁ − μ₂‖² + Σ (s₁ + s₂ − 2√(s₁ s₂)), against the closed form of the true laws."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(20_000, 3))
    b = rng.normal([1.0, 0.0, -2.0], [2.0, 1.0, 0.5], size=(20_000, 3))
    va, vb = a.var(0, ddof=1), b.var(0, ddof=1)
    cov_offdiag = np.abs(np.cov(b, rowvar=False) - np.diag(vb)).max()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(va + vb - 2 * np.sqrt(va * vb))
    assert fid.frechet_distance(a, b) == pytest.approx(expected, abs=0.02 + 10 * cov_offdiag)
    assert abs(fid.frechet_distance(a, a)) < 1e-6


@pytest.mark.parametrize("n_a, n_b, d", [(300, 400, 6), (40, 30, 64), (5, 200, 12)])
def test_frechet_distance_equals_the_sqrtm_formula(n_a, n_b, d):
    """Both exact traces of (Σ_a Σ_b)^½ (feature sets: QR/SVD; reference statistics: eigvalsh) against two independent
    paths: the square roots of the eigenvalues of the non-symmetric Σ_a Σ_b in every case (rank ≤ min(n) − 1 < d
    included, where sqrtm is unreliable), and scipy's sqrtm where Σ_a Σ_b has full rank (n > d).
    Tolerance: 1e-7 of tr Σ_a + tr Σ_b, float64 round-off of d×d products."""
    rng = np.random.default_rng(n_a + d)
    mix = rng.normal(size=(d, d))
    a, b = rng.normal(size=(n_a, d)) @ mix, rng.normal(0.5, 1.0, size=(n_b, d)) @ mix.T
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    by_eigenvalues = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    scale = np.trace(cov_a) + np.trace(cov_b)
    assert fid.frechet_distance(a, b) == pytest.approx(by_eigenvalues, abs=1e-7 * scale)
    assert fid.frechet_to_reference(a, b.mean(0), cov_b) == pytest.approx(by_eigenvalues, abs=1e-7 * scale)
    if min(n_a, n_b) > d:           # EDM's formula: scipy's sqrtm of the product, real part
        by_sqrtm = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                    - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
        assert fid.frechet_distance(a, b) == pytest.approx(by_sqrtm, abs=1e-7 * scale)
    with pytest.raises(ValueError, match="one width"):
        fid.frechet_distance(a, b[:, :-1])
    with pytest.raises(ValueError, match="do not match"):
        fid.frechet_to_reference(a, b.mean(0)[:-1], cov_b)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_and_of_a_shifted_set_positive(digits, inception):
    images = to_uint8(digits.images[:24])
    feats = fid.inception_features(images, inception, batch=12)
    assert feats.shape == (24, 2048)
    shifted = fid.inception_features(to_uint8((digits.images[:24] + 0.5).clamp(-1, 1)), inception, batch=12)
    assert abs(fid.frechet_distance(feats, feats)) < 1e-3
    assert fid.frechet_distance(feats, shifted) > 10.0


def test_clean_resize_and_input_checks(inception):
    out = fid.clean_resize(torch.full((2, 1, 8, 8), 200, dtype=torch.uint8))
    assert out.shape == (2, 3, 299, 299)
    torch.testing.assert_close(out, torch.full_like(out, 200.0))   # bicubic keeps a constant image constant
    with pytest.raises(TypeError, match="uint8"):
        fid.inception_features(torch.zeros(1, 1, 8, 8), inception)
    with pytest.raises(ValueError, match="299"):
        inception(torch.zeros(1, 3, 64, 64))
