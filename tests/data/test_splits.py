"""Group-aware splits: no product or image crosses splits; stratified; deterministic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vistune.data.splits import assign_splits, group_rows

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_groups_are_transitive_over_key_columns() -> None:
    products = ["a", "a", "b", "c", "d", None]
    images = ["x", "y", "y", "z", None, None]
    groups = group_rows([products, images])
    # rows 0,1 share product a; rows 1,2 share image y -> 0,1,2 one group
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[3], groups[4], groups[5], groups[0]}) == 4  # None never links


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 40), st.sampled_from("ABCD")),
        min_size=1,
        max_size=150,
    ),
    st.integers(0, 5),
)
def test_no_group_crosses_splits(rows, seed) -> None:
    products = [f"p{p}" for p, _, _ in rows]
    images = [f"i{i}" for _, i, _ in rows]
    groups = group_rows([products, images])
    split = assign_splits(groups, [c for _, _, c in rows], FRACTIONS, seed=seed)
    for key in (products, images):
        seen: dict[str, str] = {}
        for value, name in zip(key, split, strict=True):
            assert seen.setdefault(value, name) == name
    n_groups = groups.max() + 1
    if n_groups >= 3:  # enough groups: every split gets some rows
        assert set(split) == set(FRACTIONS)
    again = assign_splits(groups, [c for _, _, c in rows], FRACTIONS, seed=seed)
    assert (split == again).all()


def test_sizes_and_stratification_follow_fractions() -> None:
    rng = np.random.default_rng(0)
    categories = rng.choice(["A", "B", "C"], size=2000, p=[0.6, 0.3, 0.1])
    groups = group_rows([[f"p{i // 2}" for i in range(2000)]])  # pairs of rows per product
    split = assign_splits(groups, categories.tolist(), FRACTIONS, seed=1)
    for name, share in FRACTIONS.items():
        assert abs((split == name).mean() - share) < 0.01
        for category in "ABC":
            in_category = split[categories == category]
            assert abs((in_category == name).mean() - share) < 0.03
    other_seed = assign_splits(groups, categories.tolist(), FRACTIONS, seed=2)
    assert (split != other_seed).any()


def test_tiny_dataset_still_gets_validation_and_test() -> None:
    groups = group_rows([["a", "b", "c", "d"]])
    split = assign_splits(groups, ["X", "X", "Y", "Y"], FRACTIONS, seed=0)
    assert sorted(set(split)) == ["test", "train", "validation"]
    assert (split == "train").sum() == 2
