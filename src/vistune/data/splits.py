"""Leak-free splits: rows that share a product or an image always land in the same split.

A random row split leaks: a product listed twice (another date, a discount row) or two
products sharing one photo would be trained on and tested on. Rows are first joined into
groups (union-find over every key column: rows sharing any key value are one group), then
whole groups are dealt to splits, category by category, so each split gets its share of
every category where the group sizes allow, and each split that should exist gets at least
one group when there are enough groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np


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
