"""TensorBoard in and out: event files from a run store, run stores from event files.

Why the ``tensorboard`` package (the optional extra ``[tensorboard]``) rather than our own
TFRecord/protobuf code: writing the few messages we need would be a hundred lines, but reading
other tools' logs is not — TF1 writes ``simple_value``, TF2 and Keras write scalar *tensors*,
files may be truncated mid-record — and tensorboard's own ``EventAccumulator`` already reads
all of those exactly as TensorBoard does. One dependency for both directions keeps the two
sides consistent, and the core install does not grow.

Layout of an export (rank 0 in ``DIR``, rank k in ``DIR/rankK``):

- every scalar of a metrics record as a scalar tag of the same name (``loss``, ``rho_a`` …);
- each per-layer array as one scalar tag per layer, ``layers/<metric>/<layer>``, and a
  histogram ``layers/<metric>`` of that step's values over the layers.

An import turns each directory holding event files into one run store: scalar tags (TF1 and
TF2 styles) become the scalars of one metrics record per step, ``layers/<metric>/<layer>`` tags
become per-layer arrays again (so an export imports back to the same numbers), histograms and
images are not imported.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from probes.store import RunStore, StoreError, open_store
from probes.wire import Record

LAYER_PREFIX = "layers/"
EVENT_GLOB = "events.out.tfevents.*"
INSTALL_HINT = "this needs the tensorboard package: pip install 'edgewatch[tensorboard]'"


class TensorBoardMissing(StoreError):
    """The optional ``tensorboard`` package is not installed."""


def _tensorboard() -> Any:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TensorBoardMissing(INSTALL_HINT) from None
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    return event_pb2, summary_pb2, EventFileWriter


# -- out ----------------------------------------------------------------------------------------
def export_tensorboard(store: str | Path, out: str | Path) -> int:
    """Write the store's metrics as TensorBoard event files under ``out``; returns the number
    of steps written (all ranks)."""
    event_pb2, summary_pb2, writer_class = _tensorboard()
    reader = open_store(store)
    writers: dict[int, Any] = {}
    written = 0
    try:
        for record in reader.records(["metrics"]):
            writer = writers.get(record.rank)
            if writer is None:
                folder = Path(out) / (f"rank{record.rank}" if record.rank else "")
                folder.mkdir(parents=True, exist_ok=True)
                writer = writers[record.rank] = writer_class(str(folder))
            summary = summary_pb2.Summary(value=list(_values(record.data, summary_pb2)))
            writer.add_event(event_pb2.Event(wall_time=record.t, step=record.step, summary=summary))
            written += 1
    finally:
        for writer in writers.values():
            writer.close()
        reader.close()
    return written


def _values(data: dict[str, Any], summary_pb2: Any) -> Iterator[Any]:
    Value = summary_pb2.Summary.Value
    for name, value in data.get("scalars", {}).items():
        yield Value(tag=name, simple_value=float(value))
    layers = data.get("layers", [])
    for metric, values in data.get("per_layer", {}).items():
        for layer, value in zip(layers, values, strict=True):
            yield Value(tag=f"{LAYER_PREFIX}{metric}/{layer}", simple_value=float(value))
        histogram = _histogram(values, summary_pb2)
        if histogram is not None:
            yield Value(tag=f"{LAYER_PREFIX}{metric}", histo=histogram)


def _histogram(values: list[float], summary_pb2: Any) -> Any:
    """TensorBoard's HistogramProto over the finite values (right bucket edges, counts)."""
    import numpy as np

    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return None
    counts, edges = np.histogram(finite, bins=min(30, max(1, finite.size)))
    return summary_pb2.HistogramProto(
        min=float(finite.min()),
        max=float(finite.max()),
        num=float(finite.size),
        sum=float(finite.sum()),
        sum_squares=float((finite**2).sum()),
        bucket_limit=[float(e) for e in edges[1:]],
        bucket=[float(c) for c in counts],
    )


# -- in -----------------------------------------------------------------------------------------
def run_folders(log_dir: Path) -> list[Path]:
    """Every folder under ``log_dir`` (itself included) that holds event files: one run each,
    as TensorBoard counts runs."""
    folders = {path.parent for path in log_dir.rglob(EVENT_GLOB) if path.is_file()}
    return sorted(folders)


def import_tensorboard(log_dir: str | Path, out: str | Path) -> list[tuple[Path, int]]:
    """One run store per run folder in ``log_dir``, written under ``out``; returns each
    store's path and its number of steps."""
    _tensorboard()
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise StoreError(f"{log_dir}: not a folder")
    folders = run_folders(log_dir)
    if not folders:
        raise StoreError(f"{log_dir}: no TensorBoard event files ({EVENT_GLOB}) in it")
    return [_import_run(folder, log_dir, Path(out)) for folder in folders]


def _import_run(folder: Path, log_dir: Path, out: Path) -> tuple[Path, int]:
    relative = folder.relative_to(log_dir)
    name = "-".join(relative.parts) if relative.parts else log_dir.resolve().name
    steps = _read_steps(folder)
    store = RunStore(out / f"{name}.db")
    meta = {"run": name, "source": "tensorboard", "imported_from": str(folder.resolve())}
    store.append(
        Record("meta", name, 0, meta, seq=0, t=min((t for t, _ in steps.values()), default=0.0))
    )
    for seq, (step, (t, scalars)) in enumerate(sorted(steps.items()), start=1):
        store.append(Record("metrics", name, step, _metrics(scalars), seq=seq, t=t))
        store.maybe_flush()
    store.close("finished")
    if store.error:
        raise StoreError(f"{store.path}: {store.error}")
    return store.path, len(steps)


def _read_steps(folder: Path) -> dict[int, tuple[float, dict[str, float]]]:
    """step → (wall time, {tag: value}) over the folder's scalar tags, TF1 and TF2 styles."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    steps: dict[int, tuple[float, dict[str, float]]] = {}

    def put(step: int, t: float, tag: str, value: float) -> None:
        if step < 0:
            return
        wall, scalars = steps.setdefault(step, (t, {}))
        scalars[tag] = value
        steps[step] = (min(wall, t), scalars)

    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        for event in acc.Scalars(tag):
            put(event.step, event.wall_time, tag, float(event.value))
    for tag in tags.get("tensors", []):
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1 and array.dtype.kind in "fiu":
                put(event.step, event.wall_time, tag, float(array.reshape(-1)[0]))
    return steps


def _metrics(tagged: dict[str, float]) -> dict[str, Any]:
    """A metrics record's data: ``layers/<metric>/<layer>`` tags back into per-layer arrays."""
    scalars: dict[str, float] = {}
    by_metric: dict[str, dict[str, float]] = defaultdict(dict)
    for tag, value in tagged.items():
        metric, _, layer = tag[len(LAYER_PREFIX) :].partition("/")
        if tag.startswith(LAYER_PREFIX) and layer:
            by_metric[metric][layer] = value
        else:
            scalars[tag] = value
    layers = list(dict.fromkeys(layer for values in by_metric.values() for layer in values))
    per_layer = {m: [v.get(layer, math.nan) for layer in layers] for m, v in by_metric.items()}
    return {"scalars": scalars, "layers": layers, "per_layer": per_layer}


# -- the commands -------------------------------------------------------------------------------
import_app = typer.Typer(
    help="Turn other tools' logs into run stores that replay and compare open."
)


@import_app.command("tensorboard")
def import_command(
    log_dir: str = typer.Argument(
        help="A TensorBoard log folder (each folder with event files is a run)."
    ),
    out: str | None = typer.Option(
        None, help="Where the stores go (default: $EDGEWATCH_RUNS or runs/)."
    ),
) -> None:
    """Import a TensorBoard log: one run store per run, for diag replay / compare."""
    from diag.cli import console, fail
    from probes.monitor import runs_folder

    try:
        stores = import_tensorboard(log_dir, out or runs_folder())
    except StoreError as err:
        raise fail(str(err)) from None
    for path, steps in stores:
        console.print(f"wrote {steps} steps to {path}")
