"""Which experiments one heatmap may compare: equals only.

A heatmap cell averages runs, so every run in a heatmap must have trained the same way
except for the two axis params: on the same data (:func:`data_identity`), with the same
budget (``train.epochs``), trained to the end (not stopped early, not pruned), and with the
same value of every other param. Runs that are not equals are left out, and the reasons are
counted for the user. ``marginal`` lifts the other-params rule only (a marginal view,
labelled as such); data and budgets are never mixed. The report ranks runs of one data only,
by the same :func:`data_identity`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from visiontune.config.errors import VisiontuneError
from visiontune.config.paths import PREPARED
from visiontune.experiments.listing import Experiment, is_pruned

# Params that change a result in its last bits at most, so runs differing in them still
# compare, and that are never hyperparameters in a report: the torch CPU threads and kernels
# (the tuner may set the threads for its own plumbing), the device, the split size kept
# whole on it (streamed batches are the same) and the decoding processes (the same prepared
# bytes); and the sweep.* section, which only the sweep stage reads, and tune.*, which
# experiments from before the tuner's settings left params.yaml still carry.
NEUTRAL_PARAMS = frozenset(
    {"train.threads", "train.cpu_kernels", "train.device", "train.resident_mb", "data.workers"}
)
NEUTRAL_SECTIONS = ("tune.", "sweep.")
BUDGET = "train.epochs"  # the param that sets a run's budget
DATA_SECTION = "data."  # the params that make the prepared data (data.workers aside)
FROM_PARAMS = "params "  # starts a data identity made of params: DVC recorded no md5
EPOCHS_RUN = "epochs"  # the metric (metrics/train.json) with the epochs it ran

OtherParams = tuple[tuple[str, str], ...]
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Comparable:
    """The runs a heatmap compares, and what it left out.

    ``left_out`` counts the other runs by reason (``trained 12 epochs (not 2)``);
    ``groups`` is how many sets of other params the budget's runs on the kept data had, and
    ``over`` the other params that differ among ``runs`` (empty unless a marginal view was
    asked for).
    """

    runs: list[Experiment]
    epochs: int
    left_out: Counter[str]
    groups: int
    over: tuple[str, ...]

    def notes(self) -> list[str]:
        """One line per thing the user should know about the runs compared."""
        lines = []
        if self.left_out:
            lines.append(left_out_line(self.left_out))
        if self.groups > 1 and not self.over:
            lines.append(
                f"other params differ among the {self.epochs}-epoch runs: kept the largest group"
                f" sharing them all ({len(self.runs)} runs); --marginal averages over them"
            )
        return lines


def select_comparable(
    runs: Sequence[Experiment],
    *,
    x: str,
    y: str,
    epochs: int | None = None,
    marginal: bool = False,
    reference: str = "",
) -> Comparable:
    """The runs among ``runs`` that compare as equals on an ``x`` by ``y`` heatmap.

    Keeps the runs that trained to the end, of budget ``epochs`` (default: the budget most
    of them share, the larger on a tie), on the data most of those share (on a tie the
    ``reference`` data, the baseline's, then the first listed), then, unless ``marginal``,
    the largest group of those sharing every param but ``x``, ``y`` and the neutral ones
    (the first listed on a tie). Raises :class:`VisiontuneError` when no run is left.
    """
    left_out: Counter[str] = Counter()
    finished = []
    for run in runs:
        if stop := stop_reason(run):
            left_out[stop] += 1
        else:
            finished.append(run)
    if not finished:
        raise VisiontuneError(
            f"no experiment trained to the end to compare; {left_out_line(left_out)}"
        )
    budget = choose_budget(finished, epochs)
    same_budget = []
    for run in finished:
        if run.params[BUDGET] == budget:
            same_budget.append(run)
        else:
            left_out[f"trained {run.params[BUDGET]} epochs (not {budget})"] += 1
    same_data = one_data(same_budget, reference, left_out)
    groups = group_by(same_data, lambda run: other_params(run, x, y))
    if marginal:
        return Comparable(same_data, budget, left_out, len(groups), _differing(groups.keys()))
    kept = max(groups, key=lambda key: len(groups[key]))
    for key, group in groups.items():
        if key != kept:
            left_out[f"had other {', '.join(_differing((kept, key)))}"] += len(group)
    return Comparable(groups[kept], budget, left_out, len(groups), ())


def one_data(
    runs: Sequence[Experiment], reference: str, left_out: Counter[str]
) -> list[Experiment]:
    """The runs on the data most of ``runs`` trained on (on a tie the ``reference`` data, then
    the first listed); the others are counted in ``left_out`` by what their data differs in."""
    groups = group_by(runs, data_identity)
    kept = max(groups, key=lambda key: (len(groups[key]), key == reference))
    for key, group in groups.items():
        if key != kept:
            label = data_label(group[0].params, key, groups[kept][0].params)
            left_out[f"trained on other data ({label})"] += len(group)
    return groups[kept]


def group_by(
    runs: Iterable[Experiment], key: Callable[[Experiment], Key]
) -> dict[Key, list[Experiment]]:
    """``runs`` by ``key``, groups and runs in the order they first appear."""
    groups: dict[Key, list[Experiment]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def data_identity(run: Experiment) -> str:
    """What tells the data ``run`` trained on from other data: the md5 DVC recorded for its
    ``data/prepared`` output, or for a run without one its ``data.*`` params that change the
    prepared data (``params {...}``); "" for a run with no results of its own (queued,
    running, failed), which is never ranked nor averaged."""
    if run.state != "success":
        return ""
    return run.prepared or FROM_PARAMS + json.dumps(data_params(run.params), sort_keys=True)


def data_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data.*`` params among ``params`` that change the prepared data."""
    return {
        name: value
        for name, value in params.items()
        if name.startswith(DATA_SECTION) and not is_neutral(name)
    }


def data_label(params: Mapping[str, Any], identity: str, reference: Mapping[str, Any]) -> str:
    """How a run's data (its ``params`` and :func:`data_identity`) differs from a run with
    ``reference`` params, for people: the ``data.*`` params that differ
    (``data.source=/photos/cats``), or ``data/prepared 89b23466`` where none does (the
    same params made other data: the folder's images changed)."""
    others = data_params(reference)
    differing = [
        f"{name}={_text(value)}"
        for name, value in sorted(data_params(params).items())
        if name not in others or _text(others[name]) != _text(value)
    ]
    return ", ".join(differing) or f"{PREPARED.as_posix()} {identity[:8]}"


def _text(value: Any) -> str:
    """A param value as typed: ``0.15``, ``8`` (not ``8.0``: a DataFrame widens the ints of a
    column with gaps)."""
    whole = isinstance(value, float) and value.is_integer()
    return str(int(value)) if whole else str(value)


def stop_reason(run: Experiment) -> str | None:
    """Why ``run`` did not train its whole budget (pruned, stopped early), or None."""
    if is_pruned(run.metrics):
        return "pruned"
    if EPOCHS_RUN not in run.metrics or BUDGET not in run.params:
        return "recorded no epochs"
    if run.metrics[EPOCHS_RUN] != run.params[BUDGET]:
        return "stopped early"
    return None


def choose_budget(runs: Sequence[Experiment], epochs: int | None) -> int:
    """``epochs`` if some run trained that budget, else the budget most runs share (the
    larger on a tie)."""
    budgets = Counter(run.params[BUDGET] for run in runs)
    if epochs is None:
        return max(budgets, key=lambda budget: (budgets[budget], budget))
    if epochs not in budgets:
        trained = ", ".join(map(str, sorted(budgets)))
        raise VisiontuneError(
            f"no experiment trained {epochs} epochs to the end; budgets trained: {trained}"
        )
    return epochs


def other_params(run: Experiment, x: str, y: str) -> OtherParams:
    """The params of ``run`` that must match for it to compare with another run: all but
    ``x``, ``y`` and the neutral ones, as sorted (name, JSON value) pairs."""
    return tuple(
        sorted(
            (name, json.dumps(value, sort_keys=True))
            for name, value in run.params.items()
            if name not in (x, y) and not is_neutral(name)
        )
    )


def is_neutral(name: str) -> bool:
    """Whether the param ``name`` cannot change a run's result."""
    return name in NEUTRAL_PARAMS or name.startswith(NEUTRAL_SECTIONS)


def left_out_line(counts: Counter[str]) -> str:
    """``left out 3 runs: 2 trained 12 epochs (not 2), 1 stopped early`` (most first)."""
    total = sum(counts.values())
    reasons = ", ".join(f"{count} {why}" for why, count in counts.most_common())
    return f"left out {total} run{'s' if total != 1 else ''}: {reasons}"


def _differing(keys: Iterable[OtherParams]) -> tuple[str, ...]:
    """Names of the params whose value (or presence) is not the same in all ``keys``."""
    sets = [set(key) for key in keys]
    differing = set.union(*sets) - set.intersection(*sets)
    return tuple(sorted({name for name, _ in differing}))
