"""Sharding: whole households of one shape per shard, and each shard's slices of the tables."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book import synth
from engine.contract.arrow import index_in, one_chunk, unique_sorted
from engine.contract.config import RunConfig
from engine.contract.schema import Col
from engine.rebalance.shards import (Shard, cap_solver_shapes, household_ids, merge_rare_shapes, plan_shards,
                                     shape_work, shard_sizes, shard_tables)
from engine.rebalance.targets import build_targets
from engine.solver.shapes import (MIN_BUCKET, pad_accounts, pad_batch, pad_household_lots, pad_position_lots,
                                  pad_running_batch, pad_securities)


def _ids(ids) -> pa.Array:
    return pa.array(list(ids), pa.string())


@pytest.fixture(scope="module")
def book():
    tables = synth.generate_tables(90, seed=4, bad_fraction=0.0)
    targets = build_targets(tables)
    return tables, targets, targets.account_ids[targets.usable]


def test_ladders():
    assert [pad_securities(c) for c in (1, 64, 65, 200, 513, 700, 769, 1025)] == [64, 64, 128, 256, 768, 768, 1024,
                                                                                   1536]
    assert [pad_position_lots(c) for c in (0, 1, 2, 4, 5, 16, 17)] == [1, 1, 4, 4, 16, 16, 64]
    assert [pad_accounts(c) for c in (0, 1, 2, 3, 5)] == [1, 1, 2, 4, 8]
    assert [pad_household_lots(c) for c in (0, 64, 65, 200)] == [64, 64, 128, 256]
    assert [pad_batch(c) for c in (0, 1, 3, 4, 5)] == [1, 1, 4, 4, 8]
    assert [pad_running_batch(c, 128) for c in (1, 5, 9, 13, 17, 92, 100)] == [4, 8, 12, 16, 24, 96, 128]
    assert pad_running_batch(3, 2) == 2


def test_households_are_never_split_and_every_account_is_in_one_shard(book):
    tables, targets, usable = book
    run = RunConfig(shard_accounts=10, shard_elements=200_000)
    shards = plan_shards(tables, targets, usable, run)
    placed = np.concatenate([s.account_ids for s in shards])
    assert sorted(placed) == sorted(usable)
    household_of = dict(zip(usable, household_ids(tables["accounts"], usable)))
    shard_of_household = collections.defaultdict(set)
    for shard in shards:
        households = {household_of[a] for a in shard.account_ids}
        assert len(households) == shard.households
        for h in households:
            shard_of_household[h].add(shard.shard_id)
        m, L, n = shard.shape
        # bounded, unless one household alone is bigger than the bound
        assert shard.households == 1 or (shard.accounts <= run.shard_accounts
                                         and shard.households * m * L * n <= run.shard_elements)
    assert all(len(ids) == 1 for ids in shard_of_household.values())
    assert [s.shard_id for s in shards] == list(range(len(shards)))
    assert len({s.shape for s in shards}) < len(shards)          # like shapes share shards
    again = plan_shards(tables, targets, usable, run)
    assert [list(s.account_ids) for s in again] == [list(s.account_ids) for s in shards]


def test_shapes_fit_their_households(book):
    tables, targets, usable = book
    shards = plan_shards(tables, targets, usable, RunConfig(shard_accounts=1000, shard_elements=10**9))
    lots = tables["lots"]
    for shard in shards:
        m, L, n = shard.shape
        households = household_ids(tables["accounts"], shard.account_ids)
        assert max(collections.Counter(households).values()) <= m
        mine = lots.filter(pc.is_in(lots.column(Col.account_id), value_set=_ids(shard.account_ids)))
        if mine.num_rows:
            counts = mine.group_by([Col.account_id, Col.security_id]).aggregate([([], "count_all")])
            assert max(counts.column("count_all").to_pylist()) <= L
        # the solver's compact layout: every household's lots fit P, and P is on the ladder
        per_household = collections.Counter(dict(zip(shard.account_ids, households))[a]
                                             for a in mine.column(Col.account_id).to_pylist())
        assert max(per_household.values(), default=0) <= shard.lots == pad_household_lots(shard.lots)


def test_each_shard_gets_exactly_its_accounts_rows(book):
    tables, targets, usable = book
    shards = plan_shards(tables, targets, usable, RunConfig(shard_accounts=16))
    seen = collections.Counter()
    for shard, part in zip(shards, shard_tables(tables, shards)):
        mine = set(shard.account_ids)
        for name, table in part.items():
            ids = table.column(Col.account_id).to_pylist()
            assert set(ids) <= mine, name
            seen[name] += len(ids)
        wanted = tables["lots"].filter(pc.is_in(tables["lots"].column(Col.account_id), value_set=_ids(shard.account_ids)))
        assert part["lots"].num_rows == wanted.num_rows
        assert sorted(part["lots"].column(Col.lot_id).to_pylist()) == sorted(wanted.column(Col.lot_id).to_pylist())
    for name in ("accounts", "lots"):
        expected = pc.sum(pc.is_in(tables[name].column(Col.account_id), value_set=_ids(usable))).as_py()
        assert seen[name] == expected


def test_a_plan_of_more_shards_than_16_bits_number_still_slices_each_shards_rows(book):
    tables, targets, usable = book
    shards = plan_shards(tables, targets, usable, RunConfig(shard_accounts=16))
    # shard numbers past 2**15 do not fit the 16-bit keys the cut sorts by when it can: the
    # plan's shards straddle that line
    empty = [Shard(-1, np.zeros(0, object), 0, (1, 1, 1)) for _ in range(2**15 - 2)]
    parts = list(shard_tables(tables, empty + shards))
    assert len(shards) > 4 and all(table.num_rows == 0 for part in parts[:len(empty)] for table in part.values())
    for shard, part in zip(shards, parts[len(empty):]):
        assert sorted(part["lots"].column(Col.account_id).to_pylist()) == sorted(
            a for a in tables["lots"].column(Col.account_id).to_pylist() if a in set(shard.account_ids))


def test_a_rejected_members_recent_trades_stay_with_its_household(book):
    from engine.rebalance.shards import household_transactions

    tables, targets, usable = book
    accounts = tables["accounts"]
    households = household_ids(accounts, accounts.column(Col.account_id).to_pylist())
    ids = accounts.column(Col.account_id).to_pylist()
    traded = set(tables["transactions"].column(Col.account_id).to_pylist())
    members = collections.defaultdict(list)
    for account_id, household in zip(ids, households):
        members[household].append(account_id)
    household, group = next((h, m) for h, m in members.items() if len(m) > 1 and m[1] in traded)
    solved = [a for a in usable if a != group[1]]
    moved = household_transactions(tables, solved)
    before = tables["transactions"].column(Col.account_id).to_pylist()
    after = moved["transactions"].column(Col.account_id).to_pylist()
    assert group[1] not in after
    stand_in = next(a for a in group if a in solved)
    assert [a for a, b in zip(after, before) if b == group[1]] == [stand_in] * before.count(group[1])
    assert [a for a, b in zip(after, before) if b != group[1]] == [b for b in before if b != group[1]]
    traded_by = moved["transactions"].column(Col.traded_by).to_pylist()
    assert traded_by == [b if b == group[1] else None for b in before]
    assert household_transactions(tables, usable)["transactions"].equals(tables["transactions"])


@settings(max_examples=200, deadline=None)
@given(households=st.integers(0, 2000), most=st.integers(1, 600))
def test_shard_sizes_are_powers_of_two_that_cover_the_households(households, most):
    sizes = shard_sizes(households, most)
    assert sum(sizes) == households and all(0 < s <= most for s in sizes)
    powers = [s for s in sizes if s & (s - 1) == 0]
    assert len(powers) >= len(sizes) - 1 and all(s < MIN_BUCKET for s in sizes if s & (s - 1))
    assert sizes == sorted(sizes, reverse=True)


def test_a_rare_shape_joins_the_cheapest_shape_that_covers_it():
    common = [(1, 16, 512, 1024)] * 40 + [(1, 16, 768, 1024)] * 40 + [(4, 16, 768, 4096)] * 40
    rare = [(1, 16, 512, 512)] * 3 + [(1, 4, 64, 64)] + [(2, 64, 768, 2048)]
    moved = [tuple(k) for k in merge_rare_shapes(np.array(common + rare), least=32)]
    assert moved[:120] == common                                   # common shapes stay
    assert moved[120:123] == [(1, 16, 512, 1024)] * 3              # the cheaper of two covers
    assert moved[123] == (1, 4, 64, 64)               # every cover costs over 4 times its work: alone
    assert moved[124] == (2, 64, 768, 2048)           # no cover at all
    assert [tuple(k) for k in merge_rare_shapes(np.array(common + rare), least=0)] == common + rare


def test_rare_shapes_gather_in_a_rare_shape_that_covers_them():
    keys = [(2, 64, 768, 2048)] * 3 + [(2, 64, 768, 1024)] * 2 + [(1, 64, 512, 1024)] + [(4, 16, 64, 256)] * 50
    moved = [tuple(k) for k in merge_rare_shapes(np.array(keys), least=32)]
    assert moved == [(2, 64, 768, 2048)] * 6 + [(4, 16, 64, 256)] * 50


#: Households' shapes (m, L, n, P) on the ladders.
SHAPE_KEYS = st.lists(st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1, 4, 16, 64]),
                                st.sampled_from([64, 128, 512, 768]), st.sampled_from([64, 256, 1024, 4096])),
                      max_size=120)


@settings(max_examples=200, deadline=None)
@given(keys=SHAPE_KEYS, least=st.integers(0, 40))
def test_merged_shapes_cover_their_households_and_never_add_a_shape(keys, least):
    keys = np.array(keys, np.int64).reshape(-1, 4)
    moved = merge_rare_shapes(keys, least=least)
    assert moved.shape == keys.shape and (moved >= keys).all()
    assert len({tuple(k) for k in moved}) <= len({tuple(k) for k in keys})
    before = collections.Counter(map(tuple, keys))
    for key, new in zip(map(tuple, keys), map(tuple, moved)):
        if before[key] >= least:
            assert new == key
        else:
            assert shape_work(new) <= 4 * shape_work(key)


def test_a_plan_has_fewer_shapes_with_rare_ones_merged(book):
    tables, targets, usable = book
    shapes = {merge: {s.key for s in plan_shards(tables, targets, usable,
                                                 RunConfig(min_shape_households=merge, max_solver_shapes=0))}
              for merge in (0, 32)}
    assert len(shapes[32]) < len(shapes[0])
    assert shapes[32] <= shapes[0]               # households only move into shapes the book has


def _solver_shapes(keys) -> set:
    return {(int(k[0]), int(k[2]), int(k[3])) for k in keys}


def test_the_cap_joins_the_two_shapes_whose_padding_adds_least_work():
    keys = [(1, 16, 64, 64)] * 100 + [(1, 4, 64, 128)] * 100 + [(4, 16, 768, 2048)] * 10
    capped = [tuple(k) for k in cap_solver_shapes(np.array(keys), most=2)]
    # 100 × 64 more lots, against 100 × (4·768 + 2048 − 64 − 128) for the ETF shape into the direct index
    assert capped == [(1, 16, 64, 128)] * 100 + [(1, 4, 64, 128)] * 100 + [(4, 16, 768, 2048)] * 10
    # no shape covers both of two: they meet at their join, a shape the book did not have
    keys = [(1, 16, 768, 512)] * 5 + [(2, 64, 512, 1024)] * 5
    assert [tuple(k) for k in cap_solver_shapes(np.array(keys), most=1)] == \
        [(2, 16, 768, 1024)] * 5 + [(2, 64, 768, 1024)] * 5
    assert (cap_solver_shapes(np.array(keys), most=0) == keys).all()
    assert (cap_solver_shapes(np.array(keys), most=2) == keys).all()


@settings(max_examples=200, deadline=None)
@given(keys=SHAPE_KEYS, most=st.integers(0, 12))
def test_capped_shapes_cover_their_households_and_are_at_most_the_cap(keys, most):
    keys = np.array(keys, np.int64).reshape(-1, 4)
    capped = cap_solver_shapes(keys, most=most)
    assert capped.shape == keys.shape and (capped >= keys).all() and (capped[:, 1] == keys[:, 1]).all()
    count = len(_solver_shapes(keys))
    assert len(_solver_shapes(capped)) == (count if most == 0 else min(count, most))
    # households of one solver shape stay together
    for shape in _solver_shapes(keys):
        moved = {tuple(c[[0, 2, 3]]) for k, c in zip(keys, capped) if tuple(k[[0, 2, 3]]) == shape}
        assert len(moved) == 1


def test_a_plan_has_at_most_the_cap_of_solver_shapes(book):
    tables, targets, usable = book
    uncapped = _solver_shapes(s.key + (s.lots,) for s in plan_shards(
        tables, targets, usable, RunConfig(min_shape_households=0, max_solver_shapes=0)))
    assert len(uncapped) > 3
    for most in (3, 2):
        shards = plan_shards(tables, targets, usable, RunConfig(min_shape_households=0, max_solver_shapes=most))
        assert len(_solver_shapes(s.key + (s.lots,) for s in shards)) == most
        assert sorted(a for s in shards for a in s.account_ids) == sorted(usable)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-2**40, 2**40), max_size=300), runs=st.booleans())
def test_unique_sorted_is_numpys_unique_with_its_counts(values, runs):
    keys = np.sort(np.asarray(values, np.int64)) if runs else np.asarray(values, np.int64)
    keys = np.concatenate([keys, keys[: len(keys) // 3]])        # a book's lots: runs in order, and repeats
    distinct, counts = np.unique(keys, return_counts=True)
    assert np.array_equal(unique_sorted(keys), distinct)
    got, got_counts = unique_sorted(keys, return_counts=True)
    assert np.array_equal(got, distinct) and np.array_equal(got_counts, counts)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from("abcdefg")), max_size=40),
       keys=st.lists(st.sampled_from("abcde"), unique=True, max_size=5),
       cuts=st.lists(st.integers(0, 40), max_size=4), form=st.sampled_from(["chunked", "array", "list"]))
def test_index_in_finds_each_value_in_keys_chunk_by_chunk(values, keys, cuts, form):
    bounds = sorted({0, len(values), *(min(c, len(values)) for c in cuts)})
    if form == "chunked":      # the book's lots come in hundreds of chunks, some of them empty
        given_values = pa.chunked_array([pa.array(values[a:b], pa.string()) for a, b in zip(bounds, bounds[1:])],
                                        pa.string())
    else:
        given_values = pa.array(values, pa.string()) if form == "array" else values
    key_chunks = pa.chunked_array([pa.array(keys[:2], pa.string()), pa.array(keys[2:], pa.string())])
    want = [keys.index(v) if v in keys else -1 for v in values]
    for given_keys in (keys, key_chunks):
        got = index_in(given_values, given_keys)
        assert got.dtype == np.int64 and got.tolist() == want


def test_one_chunk_combines_a_tables_chunks_and_keeps_its_rows():
    table = pa.concat_tables([pa.table({"a": [i, i + 1], "b": [str(i), None]}) for i in range(0, 10, 2)])
    assert table.column("a").num_chunks == 5
    combined = one_chunk(table)
    assert combined.column("a").num_chunks == 1 and combined.equals(table)


def test_planned_shards_run_at_power_of_two_batches(book):
    tables, targets, usable = book
    for shard in plan_shards(tables, targets, usable, RunConfig(shard_accounts=40)):
        assert shard.households & (shard.households - 1) == 0 or shard.households < MIN_BUCKET


def test_an_actor_is_given_its_own_shape_then_one_no_other_actor_has():
    from engine.actors.dispatch import pick

    queue = ["a", "a", "b", "c", "b"]
    assert pick(queue, mine={"b"}, others={"a"}) == 2          # its own shape, though not first
    assert pick(queue, mine=set(), others={"a", "b"}) == 3     # a shape nobody has
    assert pick(queue, mine=set(), others={"a", "b", "c"}) == 0  # every shape taken: the first
    assert pick(queue, mine={"z"}, others=set()) == 0


def test_shards_go_out_by_shape_the_shape_of_most_work_first(book):
    from engine.actors.nightly import dispatch_order

    tables, targets, usable = book
    shards = plan_shards(tables, targets, usable, RunConfig(shard_accounts=8))
    ordered = dispatch_order(shards)
    assert sorted(s.shard_id for s in ordered) == [s.shard_id for s in shards]
    keys = [s.key for s in ordered]
    runs = [k for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]]
    assert len(runs) == len(set(keys)) > 1                      # each shape in one run

    def work(s):
        return s.households * (s.shape[0] * s.shape[2] + s.lots)
    totals = [sum(work(s) for s in ordered if s.key == k) for k in runs]
    assert totals == sorted(totals, reverse=True)
