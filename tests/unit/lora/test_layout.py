"""The wire layout: order, prefixes, weight totals, round trips (pure numpy, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.errors import LayoutError, StateError
from ffa_lora.lora import UpdateLayout, apply_mean_update
from ffa_lora.lora.exactness import delta_w

R_MAX = 4
MODULES = ("m.layer.0.query", "m.layer.0.value", "m.layer.1.query")
IN, OUT = 5, 3
HEAD = {"m.classifier.weight": (2, OUT), "m.classifier.bias": (2,)}


def shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = dict(HEAD)
    for m in MODULES:
        s[m + ".lora_A.weight"] = (R_MAX, IN)
        s[m + ".lora_B.weight"] = (OUT, R_MAX)
    return s


def random_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.normal(size=v).astype(np.float32) for k, v in shapes().items()}


@pytest.mark.parametrize(("phase", "col"), [("B", 3 * OUT), ("AB", 3 * (OUT + IN)), ("A", 3 * IN)])
def test_sizes(phase: str, col: int) -> None:
    layout = UpdateLayout.build(shapes(), phase=phase)  # type: ignore[arg-type]
    assert layout.r_max == R_MAX
    assert layout.head_len == 2 * OUT + 2
    assert layout.column_len == col
    assert layout.total_len == layout.head_len + R_MAX * col
    assert [layout.prefix_len(r) for r in range(R_MAX + 1)] == [
        layout.head_len + r * col for r in range(R_MAX + 1)]


def test_order_head_then_columns() -> None:
    rng = np.random.default_rng(0)
    state = random_state(rng)
    layout = UpdateLayout.build(state, phase="AB")
    vec = layout.flatten(state)
    head = np.concatenate([state[k].ravel() for k in sorted(HEAD)])
    np.testing.assert_array_equal(vec[: layout.head_len], head)
    for j in range(R_MAX):
        col = np.concatenate(
            [state[m + ".lora_B.weight"][:, j] for m in sorted(MODULES)]
            + [state[m + ".lora_A.weight"][j, :] for m in sorted(MODULES)]
        )
        start = layout.head_len + j * layout.column_len
        np.testing.assert_array_equal(vec[start : start + layout.column_len], col)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(0, R_MAX),
       phase=st.sampled_from(["B", "AB", "A"]))
def test_round_trip_and_prefix(seed: int, rank: int, phase: str) -> None:
    rng = np.random.default_rng(seed)
    state = random_state(rng)
    layout = UpdateLayout.build(state, phase=phase)  # type: ignore[arg-type]
    full = layout.flatten(state)
    prefix = layout.flatten(state, rank)
    assert prefix.dtype == np.float32 and len(prefix) == layout.prefix_len(rank)
    np.testing.assert_array_equal(prefix, full[: len(prefix)])
    back = layout.unflatten(full)
    assert set(back) == set(layout.trainable_keys())
    for k, v in back.items():
        np.testing.assert_array_equal(v, state[k])
    # A prefix unflattens to the rank-truncated factors (columns >= rank zero).
    trunc = layout.unflatten(prefix)
    for k, v in trunc.items():
        if k.endswith("lora_B.weight"):
            np.testing.assert_array_equal(v[:, :rank], state[k][:, :rank])
            assert not v[:, rank:].any()
        elif k.endswith("lora_A.weight"):
            np.testing.assert_array_equal(v[:rank], state[k][:rank])
            assert not v[rank:].any()
        else:
            np.testing.assert_array_equal(v, state[k])


def test_frozen_factor_not_in_layout() -> None:
    layout = UpdateLayout.build(shapes(), phase="B")
    assert not any(k.endswith("lora_A.weight") for k in layout.trainable_keys())
    layout = UpdateLayout.build(shapes(), phase="A")
    assert not any(k.endswith("lora_B.weight") for k in layout.trainable_keys())


def test_columns_and_weight_totals() -> None:
    layout = UpdateLayout.build(shapes(), phase="B")
    cols = layout.columns()
    assert (cols[: layout.head_len] == -1).all()
    for j in range(R_MAX):
        pos = layout.head_len + j * layout.column_len
        assert layout.column_of(pos) == j == cols[pos]
        assert layout.column_of(pos + layout.column_len - 1) == j
    assert layout.column_of(0) == -1
    totals = layout.weight_totals({1: 2.0, 3: 5.0, 4: 1.0})
    expected_per_col = {-1: 8.0, 0: 8.0, 1: 6.0, 2: 6.0, 3: 1.0}
    for pos, c in enumerate(cols):
        assert totals[pos] == expected_per_col[int(c)]
    with pytest.raises(LayoutError):
        layout.weight_totals({R_MAX + 1: 1.0})
    with pytest.raises(LayoutError):
        layout.column_of(layout.total_len)


@settings(max_examples=80, deadline=None)
@given(clients=st.lists(st.tuples(st.integers(1, R_MAX), st.floats(0.1, 500.0)), min_size=1,
                        max_size=5),
       seed=st.integers(0, 2**32 - 1))
def test_heterogeneous_rank_mean_is_exact_per_column(clients: list[tuple[int, float]],
                                                     seed: int) -> None:
    """The per-column weighted mean of zero-padded B updates equals, column by column, the
    weighted mean of the clients' rank-one pieces B_i[:, j] ⊗ A[j] over the clients whose rank
    covers column j (A shared); with equal ranks that is the weighted mean of their ΔW."""
    rng = np.random.default_rng(seed)
    base = random_state(rng)  # shared A
    layout = UpdateLayout.build(base, phase="B")
    deltas, total, by_rank = [], np.zeros(layout.total_len), {}
    for rank, w in clients:
        d = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in base.items()}
        vec = layout.flatten(d, rank)
        deltas.append((rank, w, layout.unflatten(vec)))
        total += layout.pad(w * vec.astype(np.float64))
        by_rank[rank] = by_rank.get(rank, 0.0) + w
    mean = layout.mean_from_sum(total, by_rank)
    agg = layout.unflatten(mean)
    for m in MODULES:
        a = base[m + ".lora_A.weight"].astype(np.float64)
        b_key = m + ".lora_B.weight"
        for j in range(R_MAX):
            have = [(w, d) for r, w, d in deltas if r > j]
            got = np.outer(agg[b_key][:, j], a[j])
            if not have:  # nobody trains this column: it stays exactly zero
                assert np.all(agg[b_key][:, j] == 0)
                continue
            wsum = sum(w for w, _ in have)
            want = sum(w * np.outer(d[b_key][:, j], a[j]) for w, d in have) / wsum
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and the head is the plain weighted mean over everyone
    wall = sum(w for _, w in clients)
    for k in HEAD:
        want = sum(w * d[k] for _, w, d in deltas) / wall
        np.testing.assert_allclose(agg[k], want, rtol=1e-4, atol=1e-5)


def test_apply_mean_update() -> None:
    rng = np.random.default_rng(1)
    state = random_state(rng)
    layout = UpdateLayout.build(state, phase="B")
    mean = rng.normal(size=layout.prefix_len(2)).astype(np.float32)
    new = apply_mean_update(state, mean, layout, server_lr=2.0)
    delta = layout.unflatten(mean)
    for k, v in state.items():
        if k in delta:
            np.testing.assert_allclose(new[k], v + 2.0 * delta[k], rtol=1e-6, atol=1e-6)
        else:  # A is frozen in phase B
            np.testing.assert_array_equal(new[k], v)
    assert not np.shares_memory(new["m.classifier.bias"], state["m.classifier.bias"])
    with pytest.raises(LayoutError):
        apply_mean_update(state, mean, layout, server_lr=0.0)


def test_bad_inputs() -> None:
    layout = UpdateLayout.build(shapes(), phase="B")
    with pytest.raises(LayoutError):
        layout.pad(np.zeros(layout.head_len + 1))  # not whole columns
    with pytest.raises(LayoutError):
        layout.pad(np.zeros(layout.total_len + 1))
    with pytest.raises(StateError):
        layout.flatten({"m.classifier.weight": np.zeros((2, OUT))})
    bad = shapes()
    bad[MODULES[0] + ".lora_A.weight"] = (R_MAX + 1, IN)
    with pytest.raises(LayoutError):
        UpdateLayout.build(bad, phase="B")


def test_delta_w_scaling() -> None:
    state = random_state(np.random.default_rng(2))
    dw = delta_w(state, scaling=2.0)
    m = MODULES[0]
    np.testing.assert_allclose(
        dw[m], 2.0 * state[m + ".lora_B.weight"].astype(np.float64) @ state[m + ".lora_A.weight"],
        rtol=1e-6)


def test_unflatten_checks_rank_length() -> None:
    layout = UpdateLayout.build(shapes(), phase="B")
    vec = np.zeros(layout.prefix_len(2), dtype=np.float32)
    assert set(layout.unflatten(vec, 2)) == set(layout.trainable_keys())
    with pytest.raises(LayoutError, match="rank 3"):
        layout.unflatten(vec, 3)
