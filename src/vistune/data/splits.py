"""Leak-free splits: rows that share a product or an image always land in the same split.

A random row split leaks: a product listed twice (another date, a discount row) or two
products sharing one photo would be trained on and tested on. Rows are first joined into
groups (union-find over every key column: rows sharing any key value are one group), then
whole groups are dealt to splits, category by category, so each split gets its share of
every category where the group sizes allow, and each split that should exist gets at least
one group when there are enough groups.

`plan_splits` adds two honest-split options on any catalog: more key columns (`--group-by
title` keeps every listing of one title in one split, e.g. a style listed under two product
codes) and held-out attribute combinations (`--holdout-combinations N`: the test split then
holds products whose combination never occurs in training, which is what "generalises to
new products" means on the synthetic catalog).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vistune.errors import ConfigError, DataError


def group_rows(keys: Sequence[Sequence[Hashable | None]]) -> np.ndarray:
    """Group ids (0..G-1, numbered by first row) for rows linked through any shared key.

    `keys` holds one sequence per key column (e.g. product codes, image hashes), each with
    one value per row; None and NaN never link rows.
    """
    n = len(keys[0]) if keys else 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in keys:
        if len(column) != n:
            raise ValueError("every key column needs one value per row")
        first: dict[Hashable, int] = {}
        for row, value in enumerate(column):
            if value is None or (isinstance(value, float) and value != value):
                continue
            if value in first:
                a, b = find(row), find(first[value])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[value] = row
    roots = [find(i) for i in range(n)]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def assign_splits(
    groups: np.ndarray,
    strata: Sequence[Hashable],
    fractions: Mapping[str, float],
    seed: int = 0,
) -> np.ndarray:
    """Split name per row, dealing whole groups so each split gets its fraction of rows.

    Within each stratum (category; a group spanning several takes its most common one) the
    groups are shuffled by `seed` and each goes to the split furthest below its target, both
    within the stratum and overall. Deterministic for (groups, strata, fractions, seed).
    """
    names = [name for name, share in fractions.items() if share > 0]
    if not names:
        raise ValueError("at least one split needs a positive fraction")
    target = np.array([fractions[name] for name in names], dtype=np.float64)
    target = target / target.sum()
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    sizes = np.bincount(groups, minlength=n_groups)
    votes: list[Counter] = [Counter() for _ in range(n_groups)]
    for group, stratum in zip(groups.tolist(), strata, strict=True):
        votes[group][str(stratum)] += 1
    group_stratum = [min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for v in votes]

    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for group, stratum in enumerate(group_stratum):
        by_stratum.setdefault(stratum, []).append(group)
    choice = np.full(n_groups, -1, dtype=np.int64)
    overall = np.zeros(len(names))
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        local = np.zeros(len(names))
        for group in rng.permutation(np.array(members, dtype=np.int64)).tolist():
            size = sizes[group]
            need_local = target * (local.sum() + size) - local
            need_overall = target * (overall.sum() + size) - overall
            pick = int(np.argmax(need_local + 0.5 * need_overall + 1e-9 * target))
            choice[group] = pick
            local[pick] += size
            overall[pick] += size
    _fill_empty_splits(choice, sizes, len(names))
    return np.array(names, dtype=object)[choice[groups]] if len(groups) else np.array([], object)


def _fill_empty_splits(choice: np.ndarray, sizes: np.ndarray, n_splits: int) -> None:
    """Move the smallest group of the most populated split into each empty split."""
    for empty in range(n_splits):
        if (choice == empty).any():
            continue
        counts = np.bincount(choice, minlength=n_splits)
        donor = int(np.argmax(counts))
        if counts[donor] < 2:  # too few groups: a split stays empty rather than breaking one
            continue
        members = np.flatnonzero(choice == donor)
        smallest = members[np.argmin(sizes[members])]
        choice[smallest] = empty


@dataclass(frozen=True)
class SplitPlan:
    """Split name per row and what decided it (recorded in the manifest)."""

    split: np.ndarray
    keys: list[str]  # columns whose shared values keep rows together
    holdout_columns: list[str]  # columns of a held-out combination (empty: none held out)
    held_out: list[dict[str, Any]]  # the held-out combinations, all in the test split
    held_out_rows: int


def plan_splits(
    frame: pd.DataFrame,
    *,
    keys: Sequence[str],
    stratum: str,
    fractions: Mapping[str, float],
    seed: int = 0,
    holdout_combinations: int = 0,
    combination_columns: Sequence[str] = (),
    holdout_split: str = "test",
) -> SplitPlan:
    """Group rows by every column in `keys` and deal whole groups to splits.

    With `holdout_combinations = N`, N distinct value combinations of `combination_columns`
    are drawn (by `seed`) and every group holding one of them goes to `holdout_split`, so
    that split holds products whose combination never occurs in any other split. The other
    groups are dealt as usual, with the fractions rescaled so the split sizes still come out
    near `fractions` where the held-out rows allow.
    """
    _require_columns(frame, [*keys, stratum], "group_by")
    groups = group_rows([_key_values(frame[column]) for column in keys])
    if holdout_combinations <= 0:
        split = assign_splits(groups, frame[stratum].tolist(), fractions, seed=seed)
        return SplitPlan(split, list(keys), [], [], 0)
    if not combination_columns:
        raise ConfigError("holdout_combinations needs combination_columns")
    if fractions.get(holdout_split, 0) <= 0:
        raise ConfigError(f"holdout_combinations needs a {holdout_split} split (fraction > 0)")
    _require_columns(frame, combination_columns, "combination_columns")
    combos = list(zip(*(_key_values(frame[c]) for c in combination_columns), strict=True))
    present = sorted({c for c in combos if None not in c}, key=lambda c: tuple(map(str, c)))
    if holdout_combinations > len(present):
        raise DataError(
            f"holdout_combinations={holdout_combinations} but only {len(present)} distinct "
            f"combinations of {', '.join(combination_columns)} exist"
        )
    rng = np.random.default_rng([seed, 0x401D])
    chosen = {present[i] for i in rng.choice(len(present), holdout_combinations, replace=False)}
    held_groups = {g for g, c in zip(groups.tolist(), combos, strict=True) if c in chosen}
    held = np.array([g in held_groups for g in groups.tolist()], dtype=bool)
    split = np.empty(len(frame), dtype=object)
    split[held] = holdout_split
    rest = ~held
    if rest.any():
        total = len(frame)
        want = {name: share * total for name, share in fractions.items()}
        want[holdout_split] = max(0.0, want[holdout_split] - held.sum())
        _, local_groups = np.unique(groups[rest], return_inverse=True)
        split[rest] = assign_splits(
            local_groups.astype(np.int64),
            frame.loc[rest, stratum].tolist(),
            {name: value / max(sum(want.values()), 1e-12) for name, value in want.items()},
            seed=seed,
        )
    held_out = [
        dict(zip(combination_columns, (_plain(v) for v in combo), strict=True))
        for combo in sorted(chosen, key=lambda c: tuple(map(str, c)))
    ]
    return SplitPlan(split, list(keys), list(combination_columns), held_out, int(held.sum()))


def _key_values(column: pd.Series) -> list[Hashable | None]:
    """Values as union-find keys: missing and empty text link nothing."""
    out: list[Hashable | None] = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
            out.append(None)
        elif isinstance(value, str):
            out.append(value.strip() or None)
        else:
            out.append(value)
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], option: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{option}: no column {', '.join(map(repr, missing))} in the prepared rows; "
            f"available columns: {', '.join(map(str, frame.columns))}"
        )
