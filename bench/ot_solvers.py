"""SNS and log-domain Sinkhorn against POT on the same problems (run by hand; prints only).

    PYTHONPATH=. python bench/ot_solvers.py [--sizes 300 1000 3000] [--problem assignment|w2]
                                            [--eta 600] [--scale-eta] [--rounds 3] [--threads 1]
                                            [--solvers sinkhorn sns pot pot_log] [--device cpu]

For each n, every round runs the chosen solvers (``--solvers``, default all four) once each on
the same instance, in a rotated order (interleaved: load on a shared machine hits all of them
alike): our log-domain Sinkhorn (``sinkhorn``), our SNS (``sns``: Sinkhorn warm-up until the
Hessian cut to 30·n entries keeps 99 % of the plan's mass, at most 20 steps), POT's
``ot.sinkhorn`` (``pot``, scaling form) and ``ot.sinkhorn_log`` (``pot_log``). Each runs until
the L1 marginal error ‖P1 − r‖₁ + ‖Pᵀ1 − c‖₁ is below 1e-8. POT checks its own criterion (the ℓ2
norm of the column-marginal gap, every 10 iterations), so it is given stopThr = 1e-8/√n, which
implies an L1 error below 1e-8; the L1 error of its plan is measured afterwards and printed.
Printed per solver: iterations, median wall time over the rounds, median CPU time of the
process (with one thread, the solver's own cost even when a loaded machine stretches the wall
time), the final L1 error, and the wall-time ratio to the first solver (``ot.sinkhorn`` by
default). POT is a peer only
(``pip install .[ot]``). Threads: torch and BLAS both limited to ``--threads``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from diag.methods.sns.newton import Problem, solve_sinkhorn, solve_sns
from diag.methods.sns.problems import PROBLEMS

TOL = 1e-8
SOLVERS = {
    "sinkhorn": "ours: Sinkhorn (log)",
    "sns": "ours: SNS",
    "pot": "POT ot.sinkhorn",
    "pot_log": "POT ot.sinkhorn_log",
}


def _l1_error(plan: np.ndarray, problem: Problem) -> float:
    r, c = problem.r.cpu().numpy(), problem.c.cpu().numpy()
    return float(np.abs(plan.sum(1) - r).sum() + np.abs(plan.sum(0) - c).sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def solvers(problem: Problem, max_iter: int) -> dict[str, Callable[[], tuple[int, float]]]:
    """name → a function that solves ``problem`` and returns (iterations, final L1 error)."""
    import ot

    n = problem.cost.shape[0]
    a, b, cost = (t.cpu().numpy() for t in (problem.r, problem.c, problem.cost))
    reg, threshold = 1.0 / problem.eta, TOL / n**0.5

    def ours_sinkhorn() -> tuple[int, float]:
        trace = solve_sinkhorn(problem, TOL, max_iter)
        return len(trace.errors), trace.errors[-1]

    def ours_sns() -> tuple[int, float]:
        trace = solve_sns(problem, TOL, max_iter, density=30 / n)
        return len(trace.errors), trace.errors[-1]

    def pot(method: str) -> Callable[[], tuple[int, float]]:
        def solve() -> tuple[int, float]:
            plan, log = ot.sinkhorn(
                a, b, cost, reg, method=method, numItermax=max_iter, stopThr=threshold, log=True
            )
            return int(log["niter"]), _l1_error(plan, problem)

        return solve

    return {
        SOLVERS["sinkhorn"]: ours_sinkhorn,
        SOLVERS["sns"]: ours_sns,
        SOLVERS["pot"]: pot("sinkhorn"),
        SOLVERS["pot_log"]: pot("sinkhorn_log"),
    }


def bench_size(args: argparse.Namespace, n: int) -> None:
    device = torch.device(args.device)
    eta = args.eta * n / 300 if args.scale_eta else args.eta
    problem = PROBLEMS[args.problem](n, eta, args.seed, device)
    names = [SOLVERS[key] for key in args.solvers]
    runs = solvers(problem, args.max_iter)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, tuple[int, float]] = {}
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = runs[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    base = statistics.median(times[names[0]])
    print(f"\n{args.problem}, n = {n}, η = {eta:g}, {args.rounds} round(s), {device}")
    print(
        f"{'solver':<22} {'iterations':>10} {'median s':>9} {'CPU s':>9} {'L1 error':>9} "
        f"{'÷ first':>7}"
    )
    for name in names:
        median = statistics.median(times[name])
        iterations, error = results[name]
        print(
            f"{name:<22} {iterations:>10} {median:>9.3f} {statistics.median(cpu[name]):>9.3f} "
            f"{error:>9.1e} {median / base:>7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="assignment")
    parser.add_argument("--eta", type=float, default=600.0)
    parser.add_argument(
        "--scale-eta",
        action="store_true",
        help="η = eta·n/300: the assignment's cost gaps shrink like 1/n, so a fixed η makes "
        "larger n easier (n = 1000 at η = 600 took Sinkhorn only 49 iterations)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-iter", type=int, default=100000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=list(SOLVERS),
        default=["pot", "sinkhorn", "sns", "pot_log"],
        help="which to run; wall times are printed as ratios to the first",
    )
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        for n in args.sizes:
            bench_size(args, n)


if __name__ == "__main__":
    main()
