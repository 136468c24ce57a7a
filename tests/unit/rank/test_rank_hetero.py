"""Heterogeneous-rank aggregation is exact: per-column means of zero-padded updates, and the
aggregated ΔW is, column by column, the weighted mean of the clients' B_i·A_i."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.errors import RankError
from ffa_lora.rank.hetero import (
    aggregate_columns,
    column_totals_from_buckets,
    delta_w,
    divide_by_column_totals,
    flat_position_totals,
    flat_update_size,
    layout_sizes,
    pad_update,
    rank_bucket_totals,
)


@st.composite
def federations(draw: st.DrawFn) -> dict:
    out = draw(st.integers(1, 7))
    in_dim = draw(st.integers(1, 7))
    r_max = draw(st.integers(1, 6))
    n = draw(st.integers(1, 5))
    ranks = [draw(st.integers(1, r_max)) for _ in range(n)]
    weights = [draw(st.floats(0.1, 500.0)) for _ in range(n)]
    seed = draw(st.integers(0, 2**32 - 1))
    scaling = draw(st.floats(0.05, 8.0))
    rng = np.random.default_rng(seed)
    bs = [rng.normal(size=(out, r)) for r in ranks]
    a = rng.normal(size=(r_max, in_dim))
    return {
        "r_max": r_max,
        "ranks": ranks,
        "weights": weights,
        "bs": bs,
        "a": a,
        "scaling": scaling,
    }


@settings(max_examples=150, deadline=None)
@given(federations())
def test_aggregation_is_plaintext_per_column_mean_of_padded_updates(fed: dict) -> None:
    r_max, ranks, weights, bs = fed["r_max"], fed["ranks"], fed["weights"], fed["bs"]
    b_mean, totals = aggregate_columns(list(zip(bs, weights, ranks)), r_max=r_max)

    padded = np.stack([pad_update(b, r_max) for b in bs])  # (n, out, r_max)
    covers = np.array([[j < r for j in range(r_max)] for r in ranks], dtype=float)  # (n, r_max)
    w = np.asarray(weights)
    expected_totals = (w[:, None] * covers).sum(axis=0)
    num = np.einsum("i,ioj->oj", w, padded)
    expected = np.where(
        expected_totals > 0, num / np.where(expected_totals > 0, expected_totals, 1), 0.0
    )
    np.testing.assert_allclose(totals, expected_totals, rtol=1e-12)
    np.testing.assert_allclose(b_mean, expected, rtol=1e-10, atol=1e-12)
    # Columns nobody covers are exactly zero.
    assert np.all(b_mean[:, expected_totals == 0] == 0)

    # The coordinator's path: decrypted Σ w_i·pad(B_i) divided by totals rebuilt from the
    # plaintext per-rank-bucket metadata only.
    buckets = rank_bucket_totals(zip(ranks, weights))
    via_buckets = divide_by_column_totals(num, column_totals_from_buckets(buckets, r_max))
    np.testing.assert_allclose(via_buckets, b_mean, rtol=1e-10, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(federations())
def test_aggregated_delta_w_is_columnwise_weighted_mean_of_client_products(fed: dict) -> None:
    r_max, ranks, weights, bs, a, s = (
        fed[k] for k in ("r_max", "ranks", "weights", "bs", "a", "scaling")
    )
    b_mean, totals = aggregate_columns(list(zip(bs, weights, ranks)), r_max=r_max)
    agg = delta_w(b_mean, a, s)
    rebuilt = np.zeros_like(agg)
    for j in range(r_max):
        # Rank-one piece of column j in the aggregate vs the weighted mean of each client's
        # B_i·A_i restricted to column j (clients whose rank covers j).
        piece = delta_w(b_mean[:, j : j + 1], a[j : j + 1], s)
        holders = [i for i, r in enumerate(ranks) if r > j]
        if not holders:
            assert np.all(piece == 0)
            continue
        client_pieces = [delta_w(bs[i][:, j : j + 1], a[j : j + 1], s) for i in holders]
        wsum = sum(weights[i] for i in holders)
        mean_piece = sum(weights[i] * p for i, p in zip(holders, client_pieces)) / wsum
        np.testing.assert_allclose(piece, mean_piece, rtol=1e-9, atol=1e-9)
        assert totals[j] == pytest.approx(wsum)
        rebuilt += mean_piece
    np.testing.assert_allclose(agg, rebuilt, rtol=1e-9, atol=1e-9)
    # Each client's own ΔW uses only its first r_i rows of the shared A.
    for b, r in zip(bs, ranks):
        np.testing.assert_allclose(
            delta_w(pad_update(b, r_max), a, s), delta_w(b, a[:r], s), atol=1e-10
        )


@settings(max_examples=60, deadline=None)
@given(federations())
def test_equal_ranks_reduce_to_ffa_exactness(fed: dict) -> None:
    r_max, weights, a, s = fed["r_max"], fed["weights"], fed["a"], fed["scaling"]
    rng = np.random.default_rng(0)
    bs = [rng.normal(size=(a.shape[0] + 2, r_max)) for _ in weights]
    b_mean, _ = aggregate_columns([(b, w, r_max) for b, w in zip(bs, weights)])
    mean_dw = sum(w * delta_w(b, a, s) for b, w in zip(bs, weights)) / sum(weights)
    np.testing.assert_allclose(delta_w(b_mean, a, s), mean_dw, rtol=1e-9, atol=1e-9)


def test_padded_updates_are_accepted_and_checked() -> None:
    b = np.arange(6.0).reshape(3, 2)
    padded = pad_update(b, 4)
    assert padded.shape == (3, 4) and np.all(padded[:, 2:] == 0)
    mean, totals = aggregate_columns([(padded, 2.0, 2), (np.ones((3, 4)), 1.0, 4)])
    np.testing.assert_allclose(mean[:, :2], (2 * b + 1) / 3)
    np.testing.assert_allclose(mean[:, 2:], 1.0)
    np.testing.assert_allclose(totals, [3, 3, 1, 1])
    bad = padded.copy()
    bad[0, 3] = 1.0
    with pytest.raises(RankError, match="beyond column 2"):
        aggregate_columns([(bad, 1.0, 2)], r_max=4)
    with pytest.raises(RankError, match="cannot be padded"):
        pad_update(np.ones((3, 5)), 4)
    with pytest.raises(RankError, match="outside 1..r_max"):
        aggregate_columns([(np.ones((3, 2)), 1.0, 5)], r_max=4)
    with pytest.raises(RankError, match="non-negative"):
        aggregate_columns([(np.ones((3, 2)), -1.0, 2)])
    with pytest.raises(RankError, match="no updates"):
        aggregate_columns([])


def test_flat_layout_sizes_and_position_totals() -> None:
    state = {
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight": np.zeros(
            (4, 10)
        ),
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight": np.zeros(
            (6, 4)
        ),
        "base_model.model.bert.encoder.layer.0.attention.self.value.lora_A.weight": np.zeros(
            (4, 10)
        ),
        "base_model.model.bert.encoder.layer.0.attention.self.value.lora_B.weight": np.zeros(
            (8, 4)
        ),
        "base_model.model.classifier.weight": np.zeros((3, 10)),
        "base_model.model.classifier.bias": np.zeros(3),
    }
    assert layout_sizes(state) == (33, 14, 4)
    assert layout_sizes(state, train_a=True) == (33, 34, 4)
    assert flat_update_size(2, head_values=33, values_per_column=14) == 33 + 28
    totals = np.array([5.0, 5.0, 2.0, 0.0])
    pos = flat_position_totals(
        head_values=33, values_per_column=14, column_totals=totals, head_total=5.0
    )
    assert pos.shape == (33 + 4 * 14,)
    assert np.all(pos[:33] == 5.0)
    assert np.all(pos[33 + 2 * 14 : 33 + 3 * 14] == 2.0) and np.all(pos[33 + 3 * 14 :] == 0.0)
    # A rank-2 client's update fills exactly the prefix whose totals include it.
    assert np.all(pos[: flat_update_size(2, head_values=33, values_per_column=14)] >= 5.0)


def test_layout_rejects_inconsistent_states() -> None:
    with pytest.raises(RankError, match="no matching lora_B"):
        layout_sizes({"m.lora_A.weight": np.zeros((2, 3))})
    with pytest.raises(RankError, match="different ranks"):
        layout_sizes(
            {
                "m.lora_A.weight": np.zeros((2, 3)),
                "m.lora_B.weight": np.zeros((3, 2)),
                "n.lora_A.weight": np.zeros((4, 3)),
                "n.lora_B.weight": np.zeros((3, 4)),
            }
        )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4),
    r_max=st.integers(1, 5),
    outs=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    head=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_flat_wire_layout_division_matches_per_module_aggregation(
    n: int, r_max: int, outs: list[int], head: int, seed: int
) -> None:
    """Σ_i w_i·flat_i (a rank-r client's flat update is a zero-padded prefix) divided by the
    per-position totals gives, module by module, aggregate_columns; the head is a plain
    weighted mean."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, r_max + 1, size=n).tolist()
    weights = rng.uniform(0.5, 50, size=n).tolist()
    per_col = sum(outs)
    size = flat_update_size(r_max, head_values=head, values_per_column=per_col)
    heads = [rng.normal(size=head) for _ in range(n)]
    bs = [[rng.normal(size=(o, r)) for o in outs] for r in ranks]
    total = np.zeros(size)
    for h, mods, r, w in zip(heads, bs, ranks, weights):
        flat = np.concatenate([h] + [m[:, j] for j in range(r) for m in mods])
        assert flat.size == flat_update_size(r, head_values=head, values_per_column=per_col)
        total[: flat.size] += w * flat
    col_totals = column_totals_from_buckets(rank_bucket_totals(zip(ranks, weights)), r_max)
    pos = flat_position_totals(
        head_values=head,
        values_per_column=per_col,
        column_totals=col_totals,
        head_total=sum(weights),
    )
    mean = np.divide(total, pos, out=np.zeros_like(total), where=pos > 0)
    np.testing.assert_allclose(
        mean[:head], sum(w * h for w, h in zip(weights, heads)) / sum(weights), atol=1e-10
    )
    body = mean[head:].reshape(r_max, per_col)
    offset = 0
    for k, out in enumerate(outs):
        expected, _ = aggregate_columns(
            [(mods[k], w, r) for mods, w, r in zip(bs, weights, ranks)], r_max=r_max
        )
        np.testing.assert_allclose(body[:, offset : offset + out].T, expected, atol=1e-10)
        offset += out
