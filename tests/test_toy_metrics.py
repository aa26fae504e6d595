"""toy.metrics against quadrature, closed-form Gaussian entropies/KLs/Fréchet distances and loop references.

Statistical tolerances come from the spread of each estimator measured over 30–40 seeds at the sample
sizes used here (quoted next to each test); each is at least four of those standard deviations.
"""

import json
import math

import pytest
import torch

from uniinstruct.toy import GaussianMixture, pair
from uniinstruct.toy import metrics

F64 = torch.float64
S_WIDE = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=F64)
M_NARROW, S_NARROW = torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([[0.6, 0.2], [0.2, 0.9]], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(mean, cov) -> GaussianMixture:
    return GaussianMixture([1.0], torch.as_tensor(mean, dtype=F64)[None], torch.as_tensor(cov, dtype=F64)[None])


def gaussian_kl(m1, c1, m0, c0) -> float:
    """KL(N(m1, c1) ‖ N(m0, c0)) in closed form."""
    prec, dm = torch.linalg.inv(c0), m0 - m1
    d = len(m1)
    return 0.5 * float(torch.trace(prec @ c1) + dm @ prec @ dm - d + torch.logdet(c0) - torch.logdet(c1))


def test_teacher_nll_matches_quadrature_entropy():
    q = pair("imbalanced").teacher
    # 400×400 trapezoid on [-7, 10]²: every mode sits ≥ 7 std inside the box (q < e⁻²⁴ on its edge) and
    # the spacing 0.043 is < 1/10 of the smallest std, so the quadrature error is far below the MC error.
    t = torch.linspace(-7.0, 10.0, 400, dtype=F64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)
    logq = q.log_prob(grid)
    entropy = -torch.trapezoid(torch.trapezoid(logq.exp() * logq, t, dim=1), t).item()
    x = q.sample(20000, generator=gen(0))
    se = q.log_prob(x).std().item() / math.sqrt(len(x))
    assert abs(metrics.teacher_nll(q, x) - entropy) < 4 * se  # 4 Monte-Carlo standard errors


def test_knn_entropy_of_gaussian():
    x = gaussian([0.0, 0.0], S_WIDE).sample(4000, generator=gen(1))
    exact = 0.5 * math.log((2 * math.pi * math.e) ** 2 * torch.det(S_WIDE).item())
    # measured over 30 seeds at n=4000, k=5: bias −0.007, std 0.019 nats → 0.08 ≈ 4 std + bias.
    assert abs(metrics.knn_entropy(x) - exact) < 0.08


def test_kl_estimators_between_gaussians():
    # Teacher narrower than the samples' law: the density ratio q/p is then bounded, the regime where
    # the Wang–Kulkarni–Verdú estimator converges fast (the other way round it is biased low at n=4000).
    q = gaussian(M_NARROW, S_NARROW)
    x = gaussian([0.0, 0.0], S_WIDE).sample(4000, generator=gen(2))
    zero = torch.zeros(2, dtype=F64)
    # measured over 40 seeds at n=4000: reverse bias +0.014, std 0.024; forward bias +0.003, std 0.025
    # → 0.1 nats is about 4 std.
    assert abs(metrics.reverse_kl(q, x) - gaussian_kl(zero, S_WIDE, M_NARROW, S_NARROW)) < 0.1
    assert abs(metrics.forward_kl(q, x, generator=gen(3)) - gaussian_kl(M_NARROW, S_NARROW, zero, S_WIDE)) < 0.1


def test_kl_estimators_vanish_on_teacher_samples():
    q = pair("three_modes").teacher
    x = q.sample(4000, generator=gen(4))
    # measured over 30 seeds at n=4000: |bias| ≤ 0.01, std ≤ 0.01 → 0.05 nats is 4 std + bias.
    assert abs(metrics.reverse_kl(q, x)) < 0.05
    assert abs(metrics.forward_kl(q, x, generator=gen(5))) < 0.05


def exact_moment_samples(mean, cov, n=500, seed=6) -> torch.Tensor:
    """n points whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), generator=gen(seed), dtype=F64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    return torch.as_tensor(mean, dtype=F64) + z @ torch.linalg.cholesky(torch.as_tensor(cov, dtype=F64)).T


def sqrt_psd(c):
    vals, vecs = torch.linalg.eigh(c)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


FRECHET_CASES = {
    # teacher, its mean and covariance worked out by hand, samples' mean and covariance
    "gaussian-diag": (gaussian([1.0, -2.0], torch.diag(torch.tensor([0.5, 2.0], dtype=F64))),
                      [1.0, -2.0], [0.5, 2.0], [0.2, 0.3], [1.5, 0.7]),
    # equal-weight modes at (±1.5, 1) with covariance diag(0.3, 0.4): mean (0, 1), cov diag(0.3 + 1.5², 0.4)
    "mixture-diag": (GaussianMixture([0.5, 0.5], [[-1.5, 1.0], [1.5, 1.0]], [[[0.3, 0.0], [0.0, 0.4]]] * 2),
                     [0.0, 1.0], [0.3 + 2.25, 0.4], [0.4, 0.5], [2.0, 0.9]),
}


@pytest.mark.parametrize("case", FRECHET_CASES)
def test_frechet_distance_diagonal_closed_form(case):
    q, m_q, v_q, m_x, v_x = (torch.as_tensor(v, dtype=F64) if i else v for i, v in enumerate(FRECHET_CASES[case]))
    x = exact_moment_samples(m_x, torch.diag(v_x))
    # commuting diagonal covariances: tr(C1 + C2 − 2 (C1 C2)^½) = Σ_i (√v1_i − √v2_i)²
    exact = float(((m_x - m_q) ** 2).sum() + ((v_x.sqrt() - v_q.sqrt()) ** 2).sum())
    assert metrics.frechet_distance(q, x) == pytest.approx(exact, rel=1e-9, abs=1e-12)  # float roundoff only


def test_frechet_distance_full_covariances():
    x = exact_moment_samples([0.3, 0.1], S_WIDE)
    q = gaussian(M_NARROW, S_NARROW)
    root = sqrt_psd(S_WIDE)  # tr (C1 C2)^½ = tr (C1^½ C2 C1^½)^½, a symmetric square root
    exact = float(((M_NARROW - torch.tensor([0.3, 0.1], dtype=F64)) ** 2).sum()
                  + torch.trace(S_WIDE + S_NARROW - 2 * sqrt_psd(root @ S_NARROW @ root)))
    assert metrics.frechet_distance(q, x) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def mmd_loops(x, y, scales):
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in scales)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_double_loop():
    x, y = torch.randn(7, 2, generator=gen(7), dtype=F64), torch.randn(5, 2, generator=gen(8), dtype=F64) + 0.5
    scales = (0.1, 0.3, 1.0, 3.0)
    assert metrics.mmd(x, y, scales) == pytest.approx(mmd_loops(x, y, scales), abs=1e-12)


def test_mmd_unbiased_and_detects_shift():
    q = pair("three_modes").teacher
    same = torch.tensor([metrics.mmd(q.sample(300, generator=gen(100 + s)), q.sample(300, generator=gen(200 + s)))
                         for s in range(20)], dtype=F64)
    spread = same.std().item()
    # unbiased: the mean of 20 replicates is within 4 standard errors of 0 (a V-statistic would sit at
    # about +2 (k(x,x) − E k(x,x')) / n ≈ +0.02, many standard errors away)
    assert abs(same.mean().item()) < 4 * spread / math.sqrt(20)
    shifted = metrics.mmd(q.sample(300, generator=gen(9)), q.sample(300, generator=gen(10)) + 0.5)
    assert shifted > 10 * spread  # a 0.5 shift (about one mode std) gives 0.11 against a null std of 0.006


def test_mode_coverage_imbalanced():
    q = pair("imbalanced").teacher
    n = 20000
    cov = metrics.mode_coverage(q, q.sample(n, generator=gen(11)))
    assert cov["n_modes"] == 3 and cov["covered"] == 3
    for w, r in zip(q.weights.tolist(), cov["ratio"]):
        # binomial standard error of fraction_k / w_k is √(w(1−w)/n)/w (0.031 for the 5% mode); argmax
        # misassignment shifts each ratio by < 0.005 (measured on 2·10⁵ labelled samples), far below that
        assert abs(r - 1.0) < 4 * math.sqrt(w * (1 - w) / n) / w
    one_mode = GaussianMixture([1.0], q.means[1:2], q.covs[1:2]).sample(2000, generator=gen(12))
    cov = metrics.mode_coverage(q, one_mode)
    assert cov["covered"] == 1 and cov["min_ratio"] == 0.0 and cov["ratio"][1] > 3.0


def test_toy_report_is_json_ready():
    q = pair("three_modes").teacher
    report = metrics.toy_report(q, q.sample(500, generator=gen(13)), generator=gen(14))
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {"teacher_nll", "knn_entropy", "reverse_kl", "forward_kl", "frechet_distance", "mmd",
                           "mode_fraction", "mode_ratio", "mode_min_ratio", "mode_covered", "mode_n_modes",
                           "off_mode", "mode_tv", "modes_above_half", "mode_mass"}


def test_bad_input():
    q = pair("three_modes").teacher
    with pytest.raises(ValueError, match="dimension 3"):
        metrics.mode_coverage(q, torch.zeros(10, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        metrics.teacher_nll(q, torch.zeros(10, dtype=F64))
    x = q.sample(50, generator=gen(15))
    with pytest.raises(ValueError, match="duplicates"):
        metrics.knn_entropy(torch.cat([x, x[:10]]))


def test_a_collapsed_sample_set_is_scored_without_the_knn_estimates():
    """Duplicates (a collapsed generator's samples) leave the k-NN entropy and KL(p‖q) undefined: NaN in the report,
    every other metric as for the same samples without the duplicate."""
    q = pair("three_modes").teacher
    x = q.sample(400, generator=gen(16))
    with_dup = metrics.toy_report(q, torch.cat([x, x[:1]]), generator=gen(1))
    assert math.isnan(with_dup["knn_entropy"]) and math.isnan(with_dup["reverse_kl"])
    assert with_dup["teacher_nll"] == pytest.approx(metrics.teacher_nll(q, torch.cat([x, x[:1]])), rel=1e-12)
    assert math.isfinite(with_dup["forward_kl"]) and math.isfinite(with_dup["mmd"])


# ---------------------------------------------------------------------------- mass on and off the modes
def test_mode_mass_of_teacher_samples_matches_chi_square():
    """Samples of a well-separated isotropic mixture fall outside radius 3 of their own mode with probability
    1 − F_χ²_d(9); per-mode masses converge to the weights. 200k samples: binomial SE of the off-mode mass ≈ 2.4e-4."""
    from scipy.stats import chi2
    from uniinstruct.toy.problems import benchmark

    q = benchmark("ring8")
    x = q.sample(200_000, generator=torch.Generator().manual_seed(3))
    out = metrics.mode_mass(q, x)
    expected = 1.0 - chi2.cdf(9.0, df=2)
    se = math.sqrt(expected * (1 - expected) / len(x))
    assert abs(out["off_mode"] - expected) < 5 * se
    assert out["tv"] < 0.006            # multinomial noise: E TV ≈ Σ √(w(1−w)/(2πn)) ≈ 0.002
    assert out["above_half"] == 8
    assert sum(out["mass"]) == pytest.approx(1.0)
    q3 = GaussianMixture([0.5, 0.5], [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]],
                         [torch.eye(3).tolist(), (4 * torch.eye(3)).tolist()])
    out3 = metrics.mode_mass(q3, q3.sample(200_000, generator=torch.Generator().manual_seed(4)))
    expected3 = 1.0 - chi2.cdf(9.0, df=3)
    assert abs(out3["off_mode"] - expected3) < 5 * math.sqrt(expected3 * (1 - expected3) / 200_000)


def test_mode_mass_by_hand():
    """Hand-placed points against an anisotropic two-mode mixture: Mahalanobis radius, nearest mode, TV."""
    q = GaussianMixture([0.75, 0.25], [[0.0, 0.0], [10.0, 0.0]], [[[4.0, 0.0], [0.0, 0.25]], [[1.0, 0.0], [0.0, 1.0]]])
    x = torch.tensor([[5.8, 0.0],     # Mahalanobis 2.9 from mode 0 along its long axis (std 2): inside
                      [0.0, 1.55],    # 3.1 along the short axis (std 0.5): outside
                      [10.0, 2.9],    # inside mode 1
                      [0.0, 0.0]],    # inside mode 0
                     dtype=torch.float64)
    out = metrics.mode_mass(q, x)
    assert out["off_mode"] == pytest.approx(0.25)
    assert out["mass"] == pytest.approx([2 / 3, 1 / 3])
    assert out["tv"] == pytest.approx(0.5 * (abs(2 / 3 - 0.75) + abs(1 / 3 - 0.25)))
    assert out["above_half"] == 2
    lonely = metrics.mode_mass(q, torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    assert lonely["above_half"] == 1 and lonely["tv"] == pytest.approx(0.25)


def test_mean_interval_against_t_table():
    from uniinstruct.tables import format_interval, mean_interval

    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)   # t_{0.975, 2} = 4.302653 (printed tables)
    assert math.isnan(mean_interval([0.5])[1])
    assert format_interval([0.5]) == "0.5"
    assert format_interval([1.0, 2.0, 3.0]) == "2 ± 2.5"
    with pytest.raises(ValueError):
        mean_interval([])


def test_welch_interval_against_the_satterthwaite_formula():
    """[1, 2, 3] vs [4, 6, 8, 10]: standard errors² 1/3 and 20/3/4, Satterthwaite df = 2² / ((1/3)²/2 + (5/3)²/3)."""
    from scipy import stats

    from uniinstruct.tables import welch_interval

    se2 = 1 / 3 + 5 / 3
    df = se2**2 / ((1 / 3) ** 2 / 2 + (5 / 3) ** 2 / 3)
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    diff, low, high = welch_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0])
    assert diff == -5.0 and df == pytest.approx(4.0755, abs=1e-4)
    assert (low, high) == pytest.approx((-5.0 - half, -5.0 + half), rel=1e-9)
    assert math.isnan(welch_interval([1.0], [2.0, 3.0])[1])
