"""Models whose learning coefficient λ is known in closed form (see shared notes, "Known values for tests").

Each builder returns ``(model, data, loss_fn, lam, nbeta)``: the model sits at w*, the data is a real
``TensorDataset``, the loss is the per-sample negative log-likelihood up to a constant (σ = 1), and
nβ = n / log n (β* = 1/log n), the setting in which λ̂ estimates λ.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset


def gaussian_nll(pred, y):
    return 0.5 * ((y - pred) ** 2).mean()


class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x):
        return x @ self.w


def regular(d: int = 4, n: int = 1000, seed: int = 0):
    """Full-rank linear regression, w* = the least-squares fit: a regular model, λ = d/2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g) + torch.randn(n, generator=g)
    w_hat = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    return Linear(w_hat), TensorDataset(x, y), lambda m, b: gaussian_nll(m(b[0]), b[1]), d / 2, n / math.log(n)


class Monomial(torch.nn.Module):
    def __init__(self, powers):
        super().__init__()
        self.register_buffer("k", torch.tensor(powers, dtype=torch.float32))
        self.w = torch.nn.Parameter(torch.zeros(len(powers)))

    def forward(self, x):
        return x * torch.prod(self.w ** self.k)


def monomial(powers, n: int = 1000, seed: int = 0):
    """y = x·∏ w_j^{k_j} + noise with truth w* = 0 (y is pure noise): λ = 1/(2·max k_j)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    y = torch.randn(n, generator=g)
    return (Monomial(powers), TensorDataset(x, y), lambda m, b: gaussian_nll(m(b[0]), b[1]),
            1 / (2 * max(powers)), n / math.log(n))


class SumOfPowers(torch.nn.Module):
    def __init__(self, d, r, p):
        super().__init__()
        self.r, self.p = r, p
        self.w = torch.nn.Parameter(torch.zeros(d))

    def forward(self):
        return (self.w[: self.r] ** self.p).sum()


def sum_of_powers(d: int = 100, r: int = 3, p: int = 4, n: int = 1000):
    """K(w) = Σ_{i≤r} w_i^p in d dimensions: λ = r/p whatever d (the other d−r directions are free)."""
    data = TensorDataset(torch.zeros(n, 1))
    return SumOfPowers(d, r, p), data, lambda m, b: m(), r / p, n / math.log(n)


class ReducedRank(torch.nn.Module):
    def __init__(self, m_in, h, n_out, scale=0.0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(h, m_in))
        self.b = torch.nn.Parameter(torch.zeros(n_out, h))

    def forward(self, x):
        return x @ self.a.T @ self.b.T


def reduced_rank(m_in: int = 5, h: int = 3, n_out: int = 5, n: int = 1000, seed: int = 0):
    """y = B·A·x + noise with true rank 0 at w* = 0 (Aoyagi & Watanabe 2005)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m_in, generator=g)
    y = torch.randn(n, n_out, generator=g)
    lam = rrr_lambda(m_in, h, n_out, 0)
    return (ReducedRank(m_in, h, n_out), TensorDataset(x, y),
            lambda m, b: 0.5 * ((b[1] - m(b[0])) ** 2).sum(1).mean(), lam, n / math.log(n))


def rrr_lambda(M: int, H: int, N: int, r: int) -> float:
    """Aoyagi & Watanabe's learning coefficient of reduced-rank regression."""
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        lam = (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2) / 8
        return lam + (1 / 8 if (M + H + N + r) % 2 == 1 else 0)
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


class DeepLinear(torch.nn.Module):
    """x ↦ x·W_1ᵀ·…·W_Lᵀ with widths (H_1 = input, …, H_{L+1} = output), all weights at w* = 0."""

    def __init__(self, widths):
        super().__init__()
        self.ws = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(h_out, h_in)) for h_in, h_out in zip(widths[:-1], widths[1:])])

    def forward(self, x):
        for w in self.ws:
            x = x @ w.T
        return x


def deep_linear(widths, n: int = 1000, seed: int = 0):
    """y = W_L⋯W_1·x + noise with true rank 0 at w* = 0: λ from Aoyagi's deep-linear formula (``dln_lambda``)."""
    widths = list(widths)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, widths[0], generator=g)
    y = torch.randn(n, widths[-1], generator=g)
    return (DeepLinear(widths), TensorDataset(x, y),
            lambda m, b: 0.5 * ((b[1] - m(b[0])) ** 2).sum(1).mean(), dln_lambda(widths, 0), n / math.log(n))


def dln_lambda(widths, r: int) -> float:
    """Learning coefficient of a deep linear network with layer widths H_1 (input) … H_{L+1} (output) whose true
    product matrix has rank r (Aoyagi 2024, "Consideration on the learning efficiency of multiple-layered neural
    networks with linear units", Neural Networks 172; the form used by Lau et al. 2023, arXiv 2308.12108, App. A).

    With Δ_j = H_j − r, take the index set Σ (|Σ| = ℓ + 1) with max_Σ Δ < min_{∉Σ} Δ, Σ_Σ Δ ≥ ℓ·max_Σ Δ and
    Σ_Σ Δ < ℓ·min_{∉Σ} Δ; with S = Σ_Σ Δ, m = ⌈S/ℓ⌉, a = S − (m − 1)ℓ:
    λ = (−r² + r(H_1 + H_{L+1}))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(S/ℓ)² + ½·Σ_{i<j ∈ Σ} Δ_i Δ_j.
    """
    import itertools

    delta = [h - r for h in widths]
    idx = range(len(delta))
    for size in range(2, len(delta) + 1):
        for sigma in itertools.combinations(idx, size):
            inside = [delta[i] for i in sigma]
            outside = [delta[i] for i in idx if i not in sigma]
            ell, s = size - 1, sum(inside)
            if outside and not (max(inside) < min(outside) and s < ell * min(outside)):
                continue
            if s < ell * max(inside):
                continue
            m = math.ceil(s / ell)
            a = s - (m - 1) * ell
            pairs = sum(x * y for x, y in itertools.combinations(inside, 2))
            return ((-r * r + r * (widths[0] + widths[-1])) / 2 + a * (ell - a) / (4 * ell)
                    - ell * (ell - 1) / 4 * (s / ell) ** 2 + pairs / 2)
    raise ValueError(f"no index set satisfies Aoyagi's conditions for widths {widths}, rank {r}")
