"""Step time of a 2-rank gloo DDP job with monitoring on vs off, and where the overhead goes.

Run by hand: ``python bench/ranks.py [--ranks 2] [--steps 50] [--rounds 30] [--hidden 512]
[--every 1] [--probes default|none] [--store] [--no-updates] [--warmup 200] [--pin] [--null]`` (it
relaunches itself under ``torchrun``; ``--pin`` keeps rank r and all its threads on core r). One
Monitor per rank for the whole run (rank 0 hosts the endpoint, rank 1 forwards); "off" rounds
skip ``observe``, "on" rounds call it with ``--probes`` (``none``: basic metrics only) and the
5 % budget; ``--store`` gives rank 0 a run store (in a temporary folder) as ``diag run`` does;
``--no-updates`` drops the update norms and the parameter copy they need. Before the timed
rounds, ``--warmup`` monitored steps are not timed: the probes' first calls (warm-up, by design
not charged to the budget) and their cadences settle there; the budget is a long-run share.
Rounds alternate so drift in machine load hits both, in the order off-on, on-off, off-on, … so
that whatever one variant leaves behind for the next (records still on the I/O thread, caches)
falls on both alike; every rank measures its own steps. ``--null``: the "on" rounds skip
``observe`` too, so the printed overhead is the bench's own bias and noise (what zero reads
as on this machine).
The Monitor sees the "on" rounds as one run with contiguous step numbers (its cadences are
multiples of step numbers); off rounds are numbered apart and never observed.

Rank 0 prints, per rank: the median and the mean step time per variant and their on/off ratios
(the budget bounds the mean: probe calls are rare, so the median shows the per-step basic
metrics); the mean time inside ``observe`` per on-step; how many on-steps ran a probe (and each
probe's time per on-step and calls); and the CPU time per step of the rank's threads during on
and off rounds (training thread, edgewatch I/O thread, ZeroMQ's background threads, the rest:
gloo). Across ranks: the mean over steps of the slowest rank's ``observe`` (what a synchronised
job pays when probe calls line up) vs of the ranks' sum (when they never do), and how many steps
had a probe call on some rank. Then, per rank, the median ``observe`` by kind of step (nothing
measured, the parameter copy, the norms, a probe call), what the budget was charged over the
on-steps (time inside ``observe`` and the transport's I/O-thread CPU, as shares of the
training intervals) next to the measured on/off ratio − 1, and the scheduler's budgets at the
end. Last, the overhead as the mean over rounds of each round's on/off ratio − 1 (against the
off round next to it) with a 95 % interval: on a shared VM the machine's speed drifts over
seconds, and the interval says how far one run's figure can be trusted.
Never asserts a timing.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from demos.ddp import make_shard
from probes.builtin import DEFAULT_PROBES
from probes.monitor import Monitor

GROUPS = ("train", "edgewatch", "zmq", "other")
KINDS = ("plain", "copy", "norms", "probe")
"""On-steps by what ``observe`` did: nothing measured, the parameter copy, the basic norms, a
probe call."""


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, grouped (Linux: per-thread CPU clocks)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    out = dict.fromkeys(GROUPS, 0.0)
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            seconds = time.clock_gettime(((~tid) << 3) | 6)  # CPUCLOCK_SCHED | per-thread
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if tid == main:
            group = "train"
        elif names.get(tid, "").startswith("edgewatch"):
            group = "edgewatch"
        elif comm.startswith("ZMQbg"):
            group = "zmq"
        else:
            group = "other"
        out[group] += seconds
    return out


class Recorder:
    """Per on-step: seconds inside ``observe`` and whether any probe ran."""

    def __init__(self, mon: Monitor) -> None:
        self.observe: list[float] = []
        self.probed: list[float] = []
        self._ran_at: set[int] = set()
        self.by_probe = {name: [0.0, 0.0] for name in DEFAULT_PROBES}  # calls, seconds
        ran = mon.scheduler.ran

        def counting(probe, step: int, seconds: float) -> None:
            self._ran_at.add(step)
            self.by_probe[probe.name][0] += 1
            self.by_probe[probe.name][1] += seconds
            ran(probe, step, seconds)

        mon.scheduler.ran = counting  # type: ignore[method-assign]
        self.scheduler = mon.scheduler
        self.by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.charged: list[tuple[float, float, float]] = []  # training, observe, I/O CPU
        self.skip_next = False  # the first on-step after an off round: its interval spans it
        finished = mon.scheduler.step_finished

        def charging(training: float, monitor: float, io: float = 0.0) -> None:
            if not self.skip_next:
                self.charged.append((training, monitor, io))
            self.skip_next = False
            finished(training, monitor, io)

        mon.scheduler.step_finished = charging  # type: ignore[method-assign]

    def charges(self, scheduler) -> list[float]:
        """What the budget was charged per on-step (observe; the I/O thread's CPU) as shares
        of the training intervals, and the scheduler's view at the end."""
        if not self.charged:  # --null: nothing was observed
            return [0.0, 0.0, 0.0, scheduler.step_time, 0.0, 0.0, 0.0, 0.0]
        training, observe, io = (sum(column) for column in zip(*self.charged, strict=True))
        return [
            io / len(self.charged),
            observe / training,
            io / training,
            scheduler.step_time,
            scheduler.base_time or 0.0,
            scheduler.io_time,
            scheduler.probe_budget(),
            scheduler.norm_budget(),
        ]

    def add(self, step: int, seconds: float) -> None:
        self.observe.append(seconds)
        self.probed.append(float(step in self._ran_at))
        if step in self._ran_at:
            kind = "probe"
        elif self.scheduler.norms_due(step):
            kind = "norms"
        elif self.scheduler.norms_due(step + 1):
            kind = "copy"  # the parameter copy the next step's update norm needs
        else:
            kind = "plain"
        self.by_kind[kind].append(seconds)

    def medians(self) -> list[float]:
        """Median seconds inside ``observe`` per kind of on-step (NaN: no such step)."""
        return [statistics.median(v) if v else math.nan for v in self.by_kind.values()]


def step_times(
    ddp, opt, x, y, mon: Monitor | None, rec: Recorder | None, steps: int, start: int
) -> list[float]:
    out = []
    if rec is not None:
        rec.skip_next = True
    for step in range(start, start + steps):
        begin = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = ddp(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        if mon is not None and rec is not None:
            observed = time.perf_counter()
            mon.observe(
                step,
                model=ddp,
                optimizer=opt,
                loss=loss,
                logits=logits.detach(),
                targets=y,
                inputs=x,
                loss_fn=F.cross_entropy,
            )
            rec.add(step, time.perf_counter() - observed)
        opt.step()
        out.append(time.perf_counter() - begin)
    return out


def worker(args: argparse.Namespace) -> None:
    if args.pin:  # before any thread exists: every thread of this rank inherits the core
        os.sched_setaffinity(0, {int(os.environ["LOCAL_RANK"]) % os.cpu_count()})
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, 10),
    )
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x, y = make_shard(rank, world, n=256 * world)
    folder = tempfile.mkdtemp(prefix="bench-ranks-")
    store = os.path.join(folder, "run.db") if args.store else None
    probes = None if args.probes == "none" else "default"
    mon = Monitor(
        "bench-ranks", store=store, every=args.every, probes=probes, track_updates=args.updates
    )
    rec = Recorder(mon)
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu = {name: dict.fromkeys(GROUPS, 0.0) for name in times}
    step_times(ddp, opt, x, y, None, None, 10, 0)  # warm-up
    step = 10
    if args.warmup:  # probes' first calls (warm-up by design) and cadences settle, untimed
        step_times(ddp, opt, x, y, mon, rec, args.warmup, step)
        step += args.warmup
        rec.observe.clear()
        rec.probed.clear()
        rec.charged.clear()
        rec.by_kind = {kind: [] for kind in KINDS}
        rec.by_probe = {name: [0.0, 0.0] for name in DEFAULT_PROBES}
    pairs = []  # per round: mean off, mean on
    off_step = 10**9  # off rounds are never observed: numbers apart from the Monitor's run
    for index in range(args.rounds):
        means = {}
        for name in times if index % 2 == 0 else reversed(times):
            before = thread_cpu()
            on = name == "on"
            first = step if on else off_step
            observed = mon if on and not args.null else None
            round_times = step_times(ddp, opt, x, y, observed, rec, args.steps, first)
            after = thread_cpu()
            for group in GROUPS:
                cpu[name][group] += after[group] - before[group]
            times[name] += round_times
            means[name] = statistics.mean(round_times)
            if on:
                step += args.steps  # the Monitor sees one contiguous run, as in training
            else:
                off_step += args.steps
        pairs.append([means["off"], means["on"]])
    norm_stride = float(mon.scheduler.norm_stride)
    charges = rec.charges(mon.scheduler)
    mon.close()
    n = args.steps * args.rounds
    summary = [
        statistics.median(times["off"]),
        statistics.median(times["on"]),
        statistics.mean(times["off"]),
        statistics.mean(times["on"]),
        statistics.mean(rec.observe) if rec.observe else 0.0,
        sum(rec.probed),
    ]
    summary += [cpu[name][g] / n for name in times for g in GROUPS]  # [6:10] off, [10:14] on
    summary += charges  # [14:22]
    summary += rec.medians() + [float(len(v)) for v in rec.by_kind.values()]  # [22:30]
    summary += [v for name in DEFAULT_PROBES for v in rec.by_probe[name]]  # [30:]: calls, s
    gathered = _gather(torch.tensor(summary, dtype=torch.float64), world)
    per_step = _gather(torch.tensor([rec.observe, rec.probed], dtype=torch.float64), world)
    strides = _gather(torch.tensor([norm_stride], dtype=torch.float64), world)
    rounds = _gather(torch.tensor(pairs, dtype=torch.float64), world)
    if rank == 0:
        report(args, gathered, torch.stack(per_step))
        report_pairs(rounds)
        print(
            f"basic norms measured every {', '.join(str(int(s)) for s in strides)} steps "
            "(per rank; the budget's stride)"
        )
    dist.destroy_process_group()


def _gather(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    out = [torch.zeros_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor)  # after the timed loops: the bench's own sync point
    return out


def report(args: argparse.Namespace, gathered: list[torch.Tensor], per_step: torch.Tensor) -> None:
    print(
        f"{len(gathered)} ranks · gloo · hidden {args.hidden} · every {args.every} · probes "
        f"{args.probes} · store {'on' if args.store else 'off'} · updates "
        f"{'on' if args.updates else 'off'} · {args.steps} steps × "
        f"{args.rounds} rounds per variant after {args.warmup} untimed monitored steps"
        + (" · null: the on rounds skip observe" if args.null else "")
    )
    print(
        f"{'rank':>4}  {'median off → on ms':>18}  {'ratio':>5}  {'mean off → on ms':>16}  "
        f"{'ratio':>5}  {'observe':>7}  {'probed':>6}  CPU ms/step on (off): " + " · ".join(GROUPS)
    )
    for r, row in enumerate(t.tolist() for t in gathered):
        off, on, off_mean, on_mean, observe, probed = row[:6]
        cpu_off, cpu_on = row[6:10], row[10:14]
        cpus = " · ".join(
            f"{a * 1e3:.2f} ({b * 1e3:.2f})" for a, b in zip(cpu_on, cpu_off, strict=True)
        )
        print(
            f"{r:>4}  {off * 1e3:8.2f} → {on * 1e3:7.2f}  {on / off:5.3f}  "
            f"{off_mean * 1e3:7.2f} → {on_mean * 1e3:6.2f}  {on_mean / off_mean:5.3f}  "
            f"{observe * 1e3:7.3f}  {int(probed):>6}  {cpus}"
        )
    n = args.steps * args.rounds
    for r, row in enumerate(t.tolist() for t in gathered):
        calls = row[30::2]
        seconds = row[31::2]
        parts = [
            f"{name} {s * 1e3 / n:.3f} ({int(c)})"
            for name, c, s in zip(DEFAULT_PROBES, calls, seconds, strict=True)
            if c
        ]
        print(f"rank {r} probe ms per on-step (calls): {' · '.join(parts) or 'none'}")
    for r, row in enumerate(t.tolist() for t in gathered):
        io_step, observe_share, io_share, step, base, io, probes, norms = row[14:22]
        measured = row[3] / row[2] - 1
        print(
            f"rank {r} charged to the budget: observe {100 * observe_share:.2f} % + I/O thread "
            f"{100 * io_share:.2f} % ({io_step * 1e3:.3f} ms/step; the bench's own count: "
            f"{row[11] * 1e3:.3f}) = {100 * (observe_share + io_share):.2f} % of training time "
            f"vs measured mean on/off − 1: {100 * measured:.2f} %; scheduler at the end: step "
            f"{step * 1e3:.2f} ms, base {base * 1e3:.3f} ms, I/O {io * 1e3:.3f} ms → probes "
            f"{100 * probes:.2f} %, norms {100 * norms:.2f} % of the step"
        )
        kinds = " · ".join(
            f"{kind} {m * 1e3:.3f} ({int(c)})"
            for kind, m, c in zip(KINDS, row[22:26], row[26:30], strict=True)
        )
        print(f"rank {r} observe ms per on-step, median by kind (steps): {kinds}")
    observe, probed = per_step[:, 0], per_step[:, 1]
    if observe.shape[-1] == 0:  # --null
        return
    union = int((probed.sum(0) > 0).sum())
    print(
        f"observe ms per on-step, across ranks: slowest {observe.max(0).values.mean() * 1e3:.3f}"
        f" · sum {observe.sum(0).mean() * 1e3:.3f}; steps with a probe call on any rank: "
        f"{union} (per rank {', '.join(str(int(p)) for p in probed.sum(1))})"
    )


def report_pairs(rounds: list[torch.Tensor]) -> None:
    """The overhead as the mean of the rounds' on/off ratios, with a 95 % interval: each on
    round is compared with the off round next to it, so drift in machine load (other tenants
    of a VM, seconds long) cancels instead of landing on one variant."""
    parts = []
    for r, pairs in enumerate(rounds):
        ratios = (pairs[:, 1] / pairs[:, 0] - 1).tolist()
        mean = statistics.mean(ratios)
        half = 1.96 * statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else 0
        parts.append(
            f"rank {r} {100 * mean:+.2f} ± {100 * half:.2f} % "
            f"(median {100 * statistics.median(ratios):+.2f} %)"
        )
    print(
        f"overhead over {len(rounds[0])} paired rounds, mean ± 95 % interval: " + " · ".join(parts)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ranks", type=int, default=2, help="processes (not --nproc: torchrun would take it)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=1, help="Monitor(every=N)")
    parser.add_argument(
        "--probes", choices=("default", "none"), default="default", help="none: basic metrics only"
    )
    parser.add_argument("--store", action="store_true", help="rank 0 keeps a run store")
    parser.add_argument(
        "--no-updates",
        dest="updates",
        action="store_false",
        help="Monitor(track_updates=False): no parameter copy, no update norms",
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="untimed monitored steps before the rounds"
    )
    parser.add_argument(
        "--null",
        action="store_true",
        help="the on rounds skip observe too: what a zero overhead reads as on this machine",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin rank r (all its threads) to core r: each rank's I/O thread then competes "
        "with its own training thread only, not with whichever rank the OS placed next to it",
    )
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.ranks}",
            __file__,
            *sys.argv[1:],
        ]
        os.execv(sys.executable, cmd)
    worker(args)


if __name__ == "__main__":
    main()
