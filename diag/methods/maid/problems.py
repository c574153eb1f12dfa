"""The two bilevel problems of ``diag run maid``: a least-squares pair with a closed-form
optimum (the authors' ``Quadratic.py``, scaled down and centred) and multinomial logistic
regression with one ridge weight per coefficient (their ``MultiClassRegression.py``, on
scikit-learn's bundled digits instead of MNIST so nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diag.methods.maid.bilevel import Bilevel


@dataclass(frozen=True)
class Quadratic:
    """g(x, θ) = ½‖A₂x + A₃θ − b₂‖², f(x) = ½‖A₁x − b₁‖².

    x̂(θ) = c − Dθ with c = (A₂ᵀA₂)⁻¹A₂ᵀb₂, D = (A₂ᵀA₂)⁻¹A₂ᵀA₃, so F(θ) = ½‖A₁(c − Dθ) − b₁‖²
    is linear least squares in θ: its minimiser, its gradient −(A₁D)ᵀ(A₁x̂ − b₁) and its
    smoothness L_F = λ_max((A₁D)ᵀA₁D) are all closed-form.
    """

    a1: torch.Tensor
    a2: torch.Tensor
    a3: torch.Tensor
    b1: torch.Tensor
    b2: torch.Tensor

    @classmethod
    def random(
        cls, rows: int, size: int, generator: torch.Generator, device: torch.device
    ) -> Quadratic:
        """The authors' recipe (x₁, x₂, θ_e ~ U[0, 1], noise 0.01·N(0, 1)) with A_i ~ U[−½, ½]
        instead of U[0, 1]: the shared mean of U[0, 1] entries makes F's Hessian so
        ill-conditioned (condition 0.8–3.3·10⁵ at n = 200, m = 10, seeds 0–2) that no
        first-order method reaches F* in a CPU-sized run; centred, it is 77–590."""

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64)

        def noise() -> torch.Tensor:
            return 0.01 * torch.randn(rows, generator=generator, dtype=torch.float64)

        a1, a2, a3 = (uniform(rows, size) - 0.5 for _ in range(3))
        x1, x2, theta_e = uniform(size), uniform(size), uniform(size)
        b1 = a1 @ x1 + noise()
        b2 = a2 @ x2 + a3 @ theta_e + noise()
        return cls(*(t.to(device) for t in (a1, a2, a3, b1, b2)))

    def bilevel(self) -> Bilevel:
        spectrum = torch.linalg.eigvalsh(self.a2.T @ self.a2)
        mu, smooth = float(spectrum[0]), float(spectrum[-1])
        mixed = float(torch.linalg.matrix_norm(self.a3.T @ self.a2, ord=2))
        return Bilevel(
            lower=lambda x, t: 0.5 * (self.a2 @ x + self.a3 @ t - self.b2).square().sum(),
            upper=lambda x: 0.5 * (self.a1 @ x - self.b1).square().sum(),
            mu=lambda _t: mu,
            smoothness=lambda _t: smooth,
            upper_smoothness=float(torch.linalg.matrix_norm(self.a1, ord=2)) ** 2,
            mixed_norm=lambda _x, _t: mixed,
            mixed_lipschitz=lambda _t: 0.0,
        )

    def solution(self, theta: torch.Tensor) -> torch.Tensor:
        """x̂(θ), exactly."""
        return torch.linalg.solve(self.a2.T @ self.a2, self.a2.T @ (self.b2 - self.a3 @ theta))

    def sensitivity(self) -> torch.Tensor:
        """A₁D: F(θ) = ½‖A₁c − b₁ − A₁Dθ‖²."""
        return self.a1 @ torch.linalg.solve(self.a2.T @ self.a2, self.a2.T @ self.a3)

    def value(self, theta: torch.Tensor) -> float:
        """F(θ), exactly."""
        return float(0.5 * (self.a1 @ self.solution(theta) - self.b1).square().sum())

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """∇F(θ), exactly."""
        return -self.sensitivity().T @ (self.a1 @ self.solution(theta) - self.b1)

    def smoothness(self) -> float:
        """L_F, the largest eigenvalue of F's (constant) Hessian: 1/L_F is the classical
        safe step of gradient descent on F."""
        s = self.sensitivity()
        return float(torch.linalg.eigvalsh(s.T @ s)[-1])

    def optimum(self) -> tuple[torch.Tensor, float]:
        """θ* and F* = F(θ*), by least squares."""
        zero = torch.zeros(self.a3.shape[1], dtype=self.a3.dtype, device=self.a3.device)
        theta = torch.linalg.lstsq(self.sensitivity(), self.a1 @ self.solution(zero) - self.b1)
        return theta.solution, self.value(theta.solution)


@dataclass(frozen=True)
class DigitsRidge:
    """g(W, θ) = CE(X_fit W, y_fit) + ½ Σ exp(θ_ij) W_ij², f(W) = CE(X_val W, y_val).

    X is the 64 pixels / 16 and a constant column (a bias, penalised like the rest), so W and θ
    are 65×10: 650 hyperparameters, the write-up's 640 plus the bias row (its recipe leaves the
    bias open). The authors use MNIST at 12×12 with 60 000 / 10 000 images; here digits' 8×8,
    1000 images in g and the other 797 in f. Constants: μ = min exp θ;
    L = ½λ_max(XᵀX)/n + max exp θ (the softmax cross-entropy's Hessian is ⪯ ½ XᵀX/n ⊗ I);
    ∂²_{θW}g = diag(exp θ ⊙ W), so B = max|exp θ ⊙ W| and L_J = max exp θ.
    """

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @classmethod
    def load(cls, fit: int, generator: torch.Generator, device: torch.device) -> DigitsRidge:
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        data = load_digits()
        x = torch.tensor(data.data, dtype=torch.float64) / 16
        x = torch.cat((x, torch.ones(len(x), 1, dtype=torch.float64)), dim=1)
        y = torch.tensor(data.target, dtype=torch.long)
        order = torch.randperm(len(y), generator=generator)
        first, rest = order[:fit], order[fit:]
        return cls(x[first].to(device), y[first].to(device), x[rest].to(device), y[rest].to(device))

    def bilevel(self) -> Bilevel:
        def half_gram_norm(x: torch.Tensor) -> float:
            return 0.5 * float(torch.linalg.matrix_norm(x, ord=2)) ** 2 / len(x)

        data_smoothness = half_gram_norm(self.x_fit)
        return Bilevel(
            lower=lambda w, t: (
                F.cross_entropy(self.x_fit @ w, self.y_fit) + 0.5 * (t.exp() * w.square()).sum()
            ),
            upper=lambda w: F.cross_entropy(self.x_val @ w, self.y_val),
            mu=lambda t: float(t.exp().min()),
            smoothness=lambda t: data_smoothness + float(t.exp().max()),
            upper_smoothness=half_gram_norm(self.x_val),
            mixed_norm=lambda w, t: float((t.exp() * w).abs().max()),
            mixed_lipschitz=lambda t: float(t.exp().max()),
        )

    def accuracy(self, w: torch.Tensor) -> float:
        """Validation accuracy of the weights W."""
        return float(((self.x_val @ w).argmax(dim=1) == self.y_val).double().mean())
