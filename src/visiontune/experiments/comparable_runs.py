"""Which experiments one heatmap may compare: equals only.

A heatmap cell averages runs, so every run in a heatmap must have trained the same way
except for the two axis params: the same budget (``train.epochs``), trained to the end (not
stopped early, not pruned), and the same value of every other param. Runs that are not
equals are left out, and the reasons are counted for the user. ``marginal`` lifts the
other-params rule only (a marginal view, labelled as such); budgets are never mixed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from visiontune.config.errors import VisiontuneError
from visiontune.experiments.listing import Experiment, is_pruned

# Params that cannot change a result, so runs differing in them still compare, and that are
# never hyperparameters in a report: the torch CPU thread count (the tuner sets it for its
# own plumbing), the device, the split size kept whole on it (streamed batches are the same)
# and the decoding processes (the same prepared bytes); and the tune.* and sweep.* sections,
# which only the tuner and the sweep stage read.
NEUTRAL_PARAMS = frozenset({"train.threads", "train.device", "train.resident_mb", "data.workers"})
NEUTRAL_SECTIONS = ("tune.", "sweep.")
BUDGET = "train.epochs"  # the param that sets a run's budget
EPOCHS_RUN = "epochs"  # the metric (metrics/train.json) with the epochs it ran

OtherParams = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Comparable:
    """The runs a heatmap compares, and what it left out.

    ``left_out`` counts the other runs by reason (``trained 12 epochs (not 2)``);
    ``groups`` is how many sets of other params the budget's runs had, and ``over`` the
    other params that differ among ``runs`` (empty unless a marginal view was asked for).
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
) -> Comparable:
    """The runs among ``runs`` that compare as equals on an ``x`` by ``y`` heatmap.

    Keeps the runs that trained to the end, of budget ``epochs`` (default: the budget most
    of them share, the larger on a tie), then, unless ``marginal``, the largest group of
    those sharing every param but ``x``, ``y`` and the neutral ones (the first listed on a
    tie). Raises :class:`VisiontuneError` when no run is left.
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
    groups: dict[OtherParams, list[Experiment]] = {}
    for run in same_budget:
        groups.setdefault(other_params(run, x, y), []).append(run)
    if marginal:
        return Comparable(same_budget, budget, left_out, len(groups), _differing(groups.keys()))
    kept = max(groups, key=lambda key: len(groups[key]))
    for key, group in groups.items():
        if key != kept:
            left_out[f"had other {', '.join(_differing((kept, key)))}"] += len(group)
    return Comparable(groups[kept], budget, left_out, len(groups), ())


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
