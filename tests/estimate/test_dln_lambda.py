"""Aoyagi's deep-linear learning coefficient against the independent reduced-rank formula and hand-worked cases."""

import itertools
import math

from tests.estimate import known_models as km


def test_two_layer_dln_formula_equals_aoyagi_watanabe_rrr():
    # a two-layer linear network is a reduced-rank regression: two independently published closed forms must agree
    for m_in, h, n_out in itertools.product(range(1, 8), repeat=3):
        for r in range(min(m_in, h, n_out) + 1):
            assert math.isclose(km.dln_lambda([m_in, h, n_out], r), km.rrr_lambda(m_in, h, n_out, r), abs_tol=1e-9)


def test_deeper_networks_by_hand():
    # (3,2,2,2,3), r = 0: Σ = all layers, ℓ = 4, S = 12, a = 4: 0 − 4·3/4·9 + ½·57 = 1.5
    assert math.isclose(km.dln_lambda([3, 2, 2, 2, 3], 0), 1.5)
    assert math.isclose(km.dln_lambda([3, 2, 2, 3], 0), 2.0)
    assert math.isclose(km.dln_lambda([3, 4, 2, 3], 0), 2.5)
    # a hidden layer wider than input + output is never the bottleneck: λ = MN/2, all of the product map
    assert km.dln_lambda([2, 50, 2], 0) == 2
    # scalar layers with a non-zero truth (r = 1): two weights, one identifiable product, λ = 1/2
    assert math.isclose(km.dln_lambda([1, 1, 1], 1), 0.5)
