"""Group-aware splits: no product or image crosses splits; stratified; deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistune.data.splits import assign_splits, group_rows, plan_splits
from vistune.errors import DataError

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


def _frame(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["product_code", "title", "category3_code", "material", "size"]
    )


def _values_by_split(frame: pd.DataFrame, split: np.ndarray, column: str) -> dict[str, set]:
    return {name: set(frame.loc[split == name, column]) for name in set(split)}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 25), st.sampled_from("ABC")),
        min_size=3,
        max_size=120,
    ),
    st.integers(0, 5),
)
def test_group_by_title_never_shares_a_title_or_product_across_splits(rows, seed) -> None:
    frame = _frame([(f"p{p}", f"t{t}", c, "m", "s") for p, t, c in rows])
    plan = plan_splits(
        frame, keys=["product_code", "title"], stratum="category3_code", fractions=FRACTIONS,
        seed=seed,
    )  # fmt: skip
    assert plan.keys == ["product_code", "title"]
    for column in ("product_code", "title"):
        values = _values_by_split(frame, plan.split, column)
        names = sorted(values)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert not values[a] & values[b], (column, a, b)


def test_without_group_by_titles_leak_and_with_it_they_do_not() -> None:
    """Each title listed under 2 product codes: only grouping by title keeps them together."""
    rows = [(f"p{k}-{n}", f"title {k}", "ABC"[k % 3], "m", "s") for k in range(200) for n in (0, 1)]
    frame = _frame(rows)
    loose = plan_splits(frame, keys=["product_code"], stratum="category3_code", fractions=FRACTIONS)
    values = _values_by_split(frame, loose.split, "title")
    assert values["train"] & values["test"]  # the leak the option exists for
    tight = plan_splits(
        frame, keys=["product_code", "title"], stratum="category3_code", fractions=FRACTIONS
    )
    values = _values_by_split(frame, tight.split, "title")
    assert not values["train"] & values["test"] and not values["validation"] & values["test"]


def test_held_out_combinations_are_only_in_test() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (f"p{k}", f"t{k}", str(rng.choice(list("ABCD"))), str(rng.choice(list("wxyz"))),
         str(rng.choice(["S", "L"])))
        for k in range(600)
    ]  # fmt: skip
    frame = _frame(rows)
    columns = ["category3_code", "material", "size"]
    plan = plan_splits(
        frame, keys=["product_code"], stratum="category3_code", fractions=FRACTIONS, seed=3,
        holdout_combinations=4, combination_columns=columns,
    )  # fmt: skip
    combos = list(zip(*(frame[c] for c in columns), strict=True))
    held = {tuple(h[c] for c in columns) for h in plan.held_out}
    assert len(held) == 4 and plan.holdout_columns == columns
    in_split = {name: {c for c, s in zip(combos, plan.split, strict=True) if s == name}
                for name in ("train", "validation", "test")}  # fmt: skip
    assert held <= in_split["test"]
    assert not held & (in_split["train"] | in_split["validation"])
    assert plan.held_out_rows == sum(c in held for c in combos)
    # The rest is still dealt near the fractions: test is not just the held-out rows.
    sizes = {name: int((plan.split == name).sum()) for name in ("train", "validation", "test")}
    assert sizes["test"] >= plan.held_out_rows
    assert abs(sizes["train"] / len(frame) - 0.8) < 0.05
    assert abs(sizes["test"] / len(frame) - 0.1) < 0.05 or sizes["test"] == plan.held_out_rows
    again = plan_splits(
        frame, keys=["product_code"], stratum="category3_code", fractions=FRACTIONS, seed=3,
        holdout_combinations=4, combination_columns=columns,
    )  # fmt: skip
    assert (again.split == plan.split).all()


def test_holding_out_a_combination_takes_its_whole_group_to_test() -> None:
    """A product listed with two combinations (e.g. a shared photo) must not straddle splits."""
    rows = [(f"p{k}", f"t{k}", "A", "wx"[k % 2], "S") for k in range(40)]
    rows.append(("p0", "t-extra", "A", "z", "S"))  # p0 is also sold as combination z
    frame = _frame(rows)
    plan = plan_splits(
        frame, keys=["product_code"], stratum="category3_code", fractions=FRACTIONS,
        holdout_combinations=1, combination_columns=["material"],
    )  # fmt: skip
    held = plan.held_out[0]["material"]
    held_rows = frame["material"] == held
    assert set(plan.split[held_rows]) == {"test"}
    products = _values_by_split(frame, plan.split, "product_code")
    assert not products.get("train", set()) & products["test"]


def test_bad_split_options_name_the_column_or_the_limit() -> None:
    frame = _frame([(f"p{k}", f"t{k}", "A", "m", "s") for k in range(10)])
    with pytest.raises(DataError, match="group_by: no column 'colour'"):
        plan_splits(frame, keys=["colour"], stratum="category3_code", fractions=FRACTIONS)
    with pytest.raises(DataError, match="only 1 distinct combinations"):
        plan_splits(
            frame, keys=["product_code"], stratum="category3_code", fractions=FRACTIONS,
            holdout_combinations=2, combination_columns=["material"],
        )  # fmt: skip
