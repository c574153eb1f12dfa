"""Transport throughput over tcp loopback: records/s published and received, send latency.

Run by hand: ``python bench/transport.py [--records 100000]``. ``send`` is what the training
thread pays per record (an enqueue); received is what one subscriber gets end to end.
"""

from __future__ import annotations

import argparse
import statistics
import time

from probes.client import Subscriber
from probes.transport import ZmqTransport
from probes.wire import Record, metrics_data


def sample_record(step: int, layers: int) -> Record:
    names = [f"layer{i}.weight" for i in range(layers)]
    data = metrics_data(
        {"loss": 1.0 / (step + 1), "grad_norm": 0.5, "lr": 1e-3, "step_time": 0.01},
        names,
        {"grad_norm": [0.1] * layers, "update_norm": [0.01] * layers},
    )
    return Record("metrics", "bench", step, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    transport = ZmqTransport("tcp://127.0.0.1:0", run="bench", queue_size=args.records + 10)
    sub = Subscriber(transport.endpoint)
    sub.collect(lambda rs: False, timeout=0.5)  # let SUB connect and the snapshot finish
    records = [sample_record(i, args.layers) for i in range(args.records)]
    latencies = []
    start = time.perf_counter()
    for record in records:
        t0 = time.perf_counter_ns()
        transport.send(record)
        latencies.append(time.perf_counter_ns() - t0)
    send_s = time.perf_counter() - start
    got = sub.collect(lambda rs: any(r.step == args.records - 1 for r in rs), timeout=120)
    recv_s = time.perf_counter() - start
    received = sum(r.kind == "metrics" for r in got)
    transport.close()
    sub.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"{args.records} metrics records ({args.layers} layers each) over tcp loopback")
    print(
        f"{'sent/s':>12}{'received/s':>12}{'received':>10}{'lost':>6}{'send p50':>10}"
        f"{'send p99':>10}"
    )
    print(
        f"{args.records / send_s:>12.0f}{received / recv_s:>12.0f}{received:>10}"
        f"{sub.session.lost:>6}{p50 / 1e3:>8.1f}µs{p99 / 1e3:>8.1f}µs"
    )
    print(f"mean send {statistics.fmean(latencies) / 1e3:.1f} µs; repairs {sub.session.repairs}")


if __name__ == "__main__":
    main()
