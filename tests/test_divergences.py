"""The f-divergence registry against autograd and against the textbook definitions."""

import pytest
import torch

from uniinstruct import divergences


ALL = divergences.names() + ["alpha:0.5", "alpha:2", "alpha:-1", "alpha:3", "alpha:0", "alpha:1"]
TOL = dict(rtol=1e-10, atol=1e-13)


def grid():
    return torch.logspace(-2, 2, 101, dtype=torch.float64).requires_grad_(True)


def d(y, r):
    """dy/dr for an elementwise y(r), keeping the graph for higher derivatives."""
    if not y.requires_grad:  # y no longer depends on r (e.g. the third derivative of a quadratic)
        return torch.zeros_like(r)
    return torch.autograd.grad(y.sum(), r, create_graph=True)[0]


def autograd_weights(div):
    """f'', h = f''·r², h' and h'' by autograd from f alone, and the size of the terms that
    cancel in h' and h'' (product rule: |f'''|r² + 2r|f''| and |f''''|r² + 4r|f'''| + 2|f''|).
    That size sets the round-off: e.g. RKL's h' = 0 is the difference of two terms of size 2/r."""
    r = grid()
    f2 = d(d(div.f(r), r), r)
    f3 = d(f2, r)
    f4 = d(f3, r)
    h = f2 * r**2
    dh = d(h, r)
    d2h = d(dh, r)
    scale_dh = f3.abs() * r**2 + 2 * r * f2.abs()
    scale_d2h = f4.abs() * r**2 + 4 * r * f3.abs() + 2 * f2.abs()
    return [t.detach() for t in (r, f2, h, dh, d2h, scale_dh, scale_d2h)]


def assert_close_to_scale(actual, expected, scale, rtol=1e-10):
    """|actual − expected| ≤ rtol·(|expected| + scale), elementwise."""
    err = (actual - expected).abs()
    bound = rtol * (expected.abs() + scale) + 1e-300
    assert torch.all(err <= bound), f"worst err/bound {float((err / bound).max()):.3g}"


@pytest.mark.parametrize("name", ALL)
def test_h_and_derivatives_match_autograd_of_f(name):
    div = divergences.get(name)
    r, f2, h, dh, d2h, scale_dh, scale_d2h = autograd_weights(div)
    torch.testing.assert_close(div.h(r), h, **TOL)
    assert_close_to_scale(div.dh(r), dh, scale_dh)
    assert_close_to_scale(div.d2h(r), d2h, scale_d2h)
    assert torch.all(f2 > 0), "f must be strictly convex on [1e-2, 1e2]"
    assert float(div.f(torch.ones((), dtype=torch.float64))) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_lambda_weights(name):
    div = divergences.get(name)
    r, _, h, dh, d2h, scale_dh, scale_d2h = autograd_weights(div)
    assert_close_to_scale(div.lambda_di(r), r**2 * d2h, r**2 * scale_d2h)
    assert_close_to_scale(div.lambda_fgm(r), h - r * dh, h.abs() + r * scale_dh)
    assert_close_to_scale(div.lambda_cross(r), 2 * r * dh, 2 * r * scale_dh)


def alpha_f(a):
    return lambda r: (r**a - a * r - (1 - a)) / (a * (a - 1))


CLOSED_FORM = {  # name: (f, h), written from the definitions
    "fkl": (lambda r: r * torch.log(r), lambda r: r),
    "rkl": (lambda r: -torch.log(r), lambda r: torch.ones_like(r)),
    "jeffreys": (lambda r: (r - 1) * torch.log(r), lambda r: r + 1),
    "jkl": (lambda r: 0.4 * r * torch.log(r) - 0.6 * torch.log(r), lambda r: 0.4 * r + 0.6),
    "js": (lambda r: r * torch.log(r) - (1 + r) * torch.log((1 + r) / 2), lambda r: r / (1 + r)),
    "chi2": (lambda r: (r - 1) ** 2, lambda r: 2 * r**2),
    "neyman": (lambda r: (r - 1) ** 2 / r, lambda r: 2 / r),
    "hellinger": (lambda r: (torch.sqrt(r) - 1) ** 2, lambda r: 0.5 * torch.sqrt(r)),
    **{f"alpha:{a:g}": (alpha_f(a), lambda r, a=a: r**a) for a in (0.5, 2.0, -1.0, 3.0)},
    "alpha:0": (lambda r: -torch.log(r), lambda r: torch.ones_like(r)),
    "alpha:1": (lambda r: r * torch.log(r), lambda r: r),
}


def test_closed_forms_cover_registry():
    assert set(divergences.names()) <= set(CLOSED_FORM)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_closed_form_f_and_h(name):
    f, h = CLOSED_FORM[name]
    div = divergences.get(name)
    r = grid().detach()
    torch.testing.assert_close(div.f(r), f(r), **TOL)
    torch.testing.assert_close(div.h(r), h(r), **TOL)


@pytest.mark.parametrize("a_name, other, scale", [
    ("alpha:0", "rkl", 1.0), ("alpha:1", "fkl", 1.0), ("alpha:2", "chi2", 0.5), ("alpha:0.5", "hellinger", 2.0),
])
def test_alpha_special_cases(a_name, other, scale):
    r = grid().detach()
    torch.testing.assert_close(divergences.get(a_name).f(r), scale * divergences.get(other).f(r), **TOL)


def test_get_normalises_names():
    r = grid().detach()
    assert divergences.get("  FKL ").name == "fkl"
    torch.testing.assert_close(divergences.get("  FKL ").f(r), r * torch.log(r), **TOL)
    assert divergences.get(" Alpha:0.5").name == "alpha:0.5"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        divergences.get("kl-ish")
    message = str(err.value)
    for name in divergences.names():
        assert name in message
    assert "alpha:<value>" in message


@pytest.mark.parametrize("bad", ["alpha:abc", "alpha:nan", "alpha:inf", "alpha:", 1.0, None, ["fkl"]])
def test_bad_names_raise_value_error(bad):
    with pytest.raises(ValueError):
        divergences.get(bad)
