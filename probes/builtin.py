"""The built-in probes: the five stability diagnostics adapted to the stream.

Each is a thin adapter over a pure function in ``probes.diagnostics`` (tested there against
exact computations). Scalar names here are the ones the TUI charts and the alerts watch.
"""

from __future__ import annotations

import statistics
from collections import deque

import torch

from probes import diagnostics as dx
from probes.probe import Probe, ProbeOutput, StepContext, register_probe


@register_probe
class SoftmaxCollapseProbe(Probe):
    """Softmax collapse in the dtype the loss is computed in (the headline, ``sc_fraction``)
    and the partition-sum headroom view per dtype (``sc_fp16``/``sc_bf16``/``sc_fp32``, rows that
    overflow counted as collapsed; ``sc_fp16_overflow`` their share in fp16)."""

    name = "softmax_collapse"
    cost = "cheap"
    requires = ("logits",)
    default_every = 10

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = dx.softmax_collapse(ctx.logits, ctx.targets, loss_dtype=ctx.loss_dtype)
        scalars = {
            "sc_fraction": res.fraction,
            "sc_fp16": res.fraction_by_dtype["float16"],
            "sc_bf16": res.fraction_by_dtype["bfloat16"],
            "sc_fp32": res.fraction_by_dtype["float32"],
            "sc_fp16_overflow": res.overflow_by_dtype["float16"],
            "max_logit_gap": res.max_logit_gap,
        }
        if res.zero_loss_fraction is not None:
            scalars["zero_loss_fraction"] = res.zero_loss_fraction
        return ProbeOutput(scalars)


@register_probe
class NLMProbe(Probe):
    """cos(−∇W, W) per layer and globally, from the gradients already on the parameters."""

    name = "nlm"
    cost = "cheap"
    requires = ("model",)
    default_every = 5

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = dx.nlm_alignment(ctx.model)
        return ProbeOutput(
            {"nlm_cos": res.global_cosine},
            {"nlm_cos": dict(zip(res.layers, res.cosines, strict=True))},
        )


@register_probe
class SafeStepProbe(Probe):
    """ρ_a along the last optimizer step and r = ‖p‖/ρ_a (r ≥ 1: beyond the safe radius).

    Conditions (each a choice, see README "Diagnostics"): the direction is the update the
    optimizer actually applied last step (θ_t − θ_{t−1}), evaluated at the current parameters
    — the Monitor sees a step only after it happened, and consecutive steps point alike; the
    samples are the current mini-batch (``inputs=``), or a fixed ``probe_batch`` (the same
    samples every time, e.g. a slice of the training set, so r moves only with the model);
    ``mode`` "eval" (running BatchNorm stats, no Dropout) or "train". ``rho_a_spread`` is the
    sub-batch spread of ρ_a (:func:`probes.diagnostics.radius_spread`).
    """

    name = "safe_step"
    cost = "jvp"
    requires = ("model", "inputs", "last_update")
    default_every = 10

    def __init__(
        self,
        every: int | None = None,
        budget: float | None = None,
        *,
        mode: str = "eval",
        probe_batch: object = None,
    ) -> None:
        super().__init__(every, budget)
        if mode not in ("eval", "train"):
            raise ValueError(f"safe_step: mode must be 'eval' or 'train', got {mode!r}")
        self.mode = mode
        self.probe_batch = probe_batch
        if probe_batch is not None:
            self.requires = ("model", "last_update")  # type: ignore[misc]

    def compute(self, ctx: StepContext) -> ProbeOutput:
        inputs = ctx.inputs if self.probe_batch is None else self.probe_batch
        res = dx.safe_step_radius(ctx.model, inputs, ctx.last_update, mode=self.mode)
        scalars = {"rho_a": res.rho, "r": res.r, "rho_a_spread": dx.radius_spread(res.delta_a)}
        if res.rho_binary is not None:
            scalars["rho_binary"] = res.rho_binary
        return ProbeOutput(scalars)


@register_probe
class SpectralProbe(Probe):
    """σ_max of each 2-D weight and of its last update, stable rank, μP ratio (warm power it.)."""

    name = "spectral"
    cost = "cheap"
    requires = ("model",)
    default_every = 10

    def __init__(self, every: int | None = None, budget: float | None = None) -> None:
        super().__init__(every, budget)
        self._state: dx.SpectralState | None = None

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = dx.spectral_norms(ctx.model, self._state)
        self._state = res.state
        per_layer = {
            key: dict(zip(res.layers, values, strict=True))
            for key, values in (
                ("sigma_max", res.sigma_max),
                ("sigma_max_update", res.sigma_max_update),
                ("stable_rank", res.stable_rank),
                ("mup_ratio", res.mup_ratio),
                ("sigma_residual", res.sigma_residual),
            )
        }
        top = max(res.sigma_max, default=float("nan"))
        return ProbeOutput({"sigma_max": top}, per_layer)


TRACE_WINDOW = 8
"""Calls of the trace probe pooled for the gauge's confidence bound (``trace_gauge_low``)."""


@register_probe
class HessianTraceProbe(Probe):
    """Hutchinson tr(H) (K Rademacher probes), its standard error, and the linear-stability
    gauge of the optimizer that is running:

    * SGD (momentum β): ``trace_gauge`` = tr(H)·η(1−β)/(2+2β) (Wu & Su; β = 0: tr(H)·η/2);
    * Adam-like (``exp_avg_sq`` in its state, β₁): the trace the preconditioned step sees,
      ``trace_precond`` = tr(P⁻¹H) with P = diag(√v̂ + ε), and the gauge from it;
    * any other optimizer: ``trace_h`` only — the condition has no form for it.

    One Hutchinson draw is noise (single samples spread 50–157 % of tr(H)), so the alert
    watches ``trace_gauge_low``: the mean of the gauge's samples over the last
    ``TRACE_WINDOW`` calls minus two standard errors.
    """

    name = "hessian_trace"
    cost = "hvp"
    requires = ("model", "inputs", "targets", "loss_fn")
    default_every = 50

    def __init__(self, every: int | None = None, budget: float | None = None, probes: int = 1):
        super().__init__(every, budget)
        self.k = probes
        self._generator = torch.Generator().manual_seed(1234)
        self._window: deque[list[float]] = deque(maxlen=TRACE_WINDOW)

    @property
    def work(self) -> float:
        return float(self.k)

    def compute(self, ctx: StepContext) -> ProbeOutput:
        momentum = dx.momentum_of(ctx.optimizer)
        adaptive = momentum is not None and "betas" in ctx.optimizer.param_groups[0]
        diag = None
        if adaptive:
            params = [p for _, p in ctx.model.named_parameters() if p.requires_grad]
            diag = dx.adam_preconditioner(ctx.optimizer, params)
        res = dx.hessian_trace(
            ctx.model,
            ctx.loss_fn,
            ctx.inputs,
            ctx.targets,
            probes=self.k,
            generator=self._generator,
            per_layer=True,
            preconditioner=diag,
        )
        total = res.trace
        shares = {n: (v / total if total else float("nan")) for n, v in res.per_layer.items()}
        scalars = {"trace_precond" if diag is not None else "trace_h": total}
        scalars["trace_stderr"] = res.stderr
        if momentum is not None and (diag is not None or not adaptive):
            scalars.update(self._gauges(res.samples, ctx.lr, momentum))
        return ProbeOutput(scalars, {"trace_share": shares})

    def _gauges(self, samples: list[float], lr: float, momentum: float) -> dict[str, float]:
        gauges = [dx.sgd_stability_gauge(s, lr, momentum) for s in samples]
        self._window.append(gauges)
        pooled = [g for call in self._window for g in call]
        low = float("nan")
        if len(pooled) > 1:
            low = statistics.fmean(pooled) - 2 * statistics.stdev(pooled) / len(pooled) ** 0.5
        return {"trace_gauge": statistics.fmean(gauges), "trace_gauge_low": low}


@register_probe
class TopEigenvalueProbe(Probe):
    """λ_max (largest algebraic) of the Hessian by warm-started Lanczos, stopped on the residual
    ``tol·|λ|``; the EoS gauge λ_max·η/2, the residual and the HVPs spent."""

    name = "lambda_max"
    cost = "hvp"
    requires = ("model", "inputs", "targets", "loss_fn")
    default_every = 100

    def __init__(
        self,
        every: int | None = None,
        budget: float | None = None,
        iterations: int = 20,
        tol: float = 1e-2,
    ):
        super().__init__(every, budget)
        self.iterations = iterations
        self.tol = tol
        self._generator = torch.Generator().manual_seed(4321)
        self._vector: list[torch.Tensor] | None = None

    @property
    def work(self) -> float:
        """HVPs a call may take: the cap (a warm start usually stops far earlier)."""
        return float(self.iterations)

    def compute(self, ctx: StepContext) -> ProbeOutput:
        res = dx.hessian_top_eigenvalue(
            ctx.model,
            ctx.loss_fn,
            ctx.inputs,
            ctx.targets,
            iterations=self.iterations,
            generator=self._generator,
            init=self._vector,
            tol=self.tol,
        )
        self._vector = res.vector
        return ProbeOutput(
            {
                "lambda_max": res.eigenvalue,
                "eos_gauge": dx.eos_gauge(res.eigenvalue, ctx.lr),
                "lambda_residual": res.residual,
                "lambda_iters": float(res.iterations),
            }
        )


DEFAULT_PROBES = ("softmax_collapse", "nlm", "safe_step", "spectral", "hessian_trace", "lambda_max")
