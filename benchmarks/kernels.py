"""Time each Numba kernel against its pure-Python reference on a synthetic book.

Run: ``.venv/bin/python benchmarks/kernels.py [--accounts 2000] [--seed 0]``.
Inputs come from :func:`engine.book.synth.generate_tables`.  Each kernel runs on
the whole shard (one call, single thread), best of ``--repeat`` runs after a
warm-up call (so compile time is excluded); each reference runs once on a
slice of the shard and its rate is extrapolated.  Prints a table and writes
``benchmarks/results/kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.book import synth  # noqa: E402
from engine.contract.schema import Col, Side, TaxStatus  # noqa: E402
from engine.kernels import dates, lots  # noqa: E402
from engine.kernels import reference as ref  # noqa: E402
from engine.kernels import rounding, wash, washsale


def codes(array) -> np.ndarray:
    """Dictionary codes of a string column (nulls → -1)."""
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def shard_from_book(tables: dict[str, pa.Table]):
    """Positions (account, security) with CSR lot offsets, prices and rates."""
    accounts, securities, lot_table = tables["accounts"], tables["securities"], tables["lots"]
    lot_table = lot_table.sort_by([(Col.account_id, "ascending"), (Col.security_id, "ascending")])
    acc_index = {a: i for i, a in enumerate(accounts[Col.account_id].to_pylist())}
    sec_index = {s: i for i, s in enumerate(securities[Col.security_id].to_pylist())}
    lot_acc = np.array([acc_index[a] for a in lot_table[Col.account_id].to_pylist()])
    lot_sec = np.array([sec_index.get(s, -1) for s in lot_table[Col.security_id].to_pylist()])
    key = lot_acc * (len(sec_index) + 1) + lot_sec
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    offsets = np.r_[starts, len(key)].astype(np.int64)
    pos_acc, pos_sec = lot_acc[starts], lot_sec[starts]
    sec_price = securities[Col.price].to_numpy(zero_copy_only=False).astype(float)
    price = np.where(pos_sec >= 0, sec_price[pos_sec], np.nan)
    taxable = np.asarray(accounts[Col.tax_status].to_pylist()) == TaxStatus.taxable
    st_rate = np.where(taxable, accounts[Col.st_rate].to_numpy(), 0.0)[pos_acc]
    lt_rate = np.where(taxable, accounts[Col.lt_rate].to_numpy(), 0.0)[pos_acc]
    return dict(lot_offsets=offsets, quantity=lot_table[Col.quantity].to_numpy(),
                cost_basis=lot_table[Col.cost_basis].to_numpy(),
                acquired=dates.to_days(lot_table[Col.acquired]), price=price,
                st_rate=st_rate, lt_rate=lt_rate, position_account=pos_acc,
                fractional=securities["fractional"].to_numpy(zero_copy_only=False)[np.maximum(pos_sec, 0)])


def best_of(fn, repeat):
    fn()  # warm-up: compile or load from cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sub_shard(shard, n_positions):
    off = shard["lot_offsets"][: n_positions + 1]
    n = int(off[-1])
    out = {k: shard[k][:n] for k in ("quantity", "cost_basis", "acquired")}
    out.update({k: shard[k][:n_positions] for k in ("price", "st_rate", "lt_rate")})
    out["lot_offsets"] = off
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-positions", type=int, default=3000)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    tables = synth.generate_tables(args.accounts, args.seed)
    as_of = int(dates.to_days(synth.AS_OF))
    shard = shard_from_book(tables)
    build_s = time.perf_counter() - t0
    offsets = shard["lot_offsets"]
    n_lots, n_pos = int(offsets[-1]), len(offsets) - 1
    core = ("lot_offsets", "quantity", "cost_basis", "acquired", "price", "st_rate", "lt_rate")
    cargs = [shard[k] for k in core] + [as_of]
    rng = np.random.default_rng(args.seed)
    value = np.add.reduceat(shard["quantity"], offsets[:-1]) * shard["price"]
    sell_dollars = np.nan_to_num(value * rng.choice([0.0, 0.0, 0.3, 1.0], n_pos))
    small = sub_shard(shard, min(args.reference_positions, n_pos))
    s_lots = int(small["lot_offsets"][-1])
    sargs = [small[k] for k in core] + [as_of]
    s_sell = sell_dollars[: len(small["lot_offsets"]) - 1]

    rows = []

    def record(kernel, items, unit, fast_s, ref_items, ref_s):
        rows.append(dict(kernel=kernel, unit=unit, items=items, numba_s=fast_s,
                         numba_per_s=items / fast_s, reference_items=ref_items,
                         reference_s=ref_s, reference_per_s=ref_items / ref_s,
                         speedup=(items / fast_s) / (ref_items / ref_s)))

    curves_out = lots.tax_curves(*cargs)
    t_curves = best_of(lambda: lots.tax_curves(*cargs, out=curves_out), args.repeat)
    record("tax_curves", n_lots, "lots", t_curves, s_lots,
           once(lambda: ref.tax_curves_reference(*sargs)))
    relief_out = lots.relieve_lots(*cargs, sell_dollars=sell_dollars)
    t_relief = best_of(lambda: lots.relieve_lots(*cargs, sell_dollars=sell_dollars, out=relief_out),
                       args.repeat)
    record("relieve_lots (curve)", n_lots, "lots", t_relief, s_lots,
           once(lambda: ref.relieve_lots_reference(*sargs, sell_dollars=s_sell)))
    t_fifo = best_of(lambda: lots.relieve_lots(*cargs, sell_dollars=sell_dollars,
                                               method=lots.FIFO, out=relief_out), args.repeat)
    record("relieve_lots (fifo)", n_lots, "lots", t_fifo, s_lots,
           once(lambda: ref.relieve_lots_reference(*sargs, sell_dollars=s_sell, method=lots.FIFO)))
    rows.append(dict(kernel="curves + relief", unit="lots", items=n_lots,
                     numba_s=t_curves + t_relief, numba_per_s=n_lots / (t_curves + t_relief),
                     reference_items=None, reference_s=None, reference_per_s=None, speedup=None))

    # Wash-sale windows on the book's transactions.
    tx, accounts, securities = tables["transactions"], tables["accounts"], tables["securities"]
    acc_ids = accounts[Col.account_id].to_pylist()
    house = [h if h is not None else f"@{a}" for a, h in zip(acc_ids, accounts[Col.household_id].to_pylist())]
    house_code = dict(zip(acc_ids, codes(pa.array(house))))
    sec_ids = securities[Col.security_id].to_pylist()
    groups = [g if g is not None else f"@{s}" for s, g in zip(sec_ids, securities[Col.wash_group].to_pylist())]
    group_code = dict(zip(sec_ids, codes(pa.array(groups))))
    sec_code = {s: i for i, s in enumerate(sec_ids)}
    acc_code = {a: i for i, a in enumerate(acc_ids)}
    tx_acc = tx[Col.account_id].to_pylist()
    tx_sec = tx[Col.security_id].to_pylist()
    taxable_acc = np.asarray(accounts[Col.tax_status].to_pylist()) == TaxStatus.taxable
    wargs = (np.array([house_code[a] for a in tx_acc]), np.array([group_code[s] for s in tx_sec]),
             np.array([acc_code[a] for a in tx_acc]), np.array([sec_code[s] for s in tx_sec]),
             dates.to_days(tx[Col.trade_date]),
             wash.side_codes(tx[Col.side].to_pylist()),
             tx[Col.quantity].to_numpy(zero_copy_only=False),
             tx[Col.realized_gain].to_numpy(zero_copy_only=False), as_of)
    wkw = dict(taxable=taxable_acc[wargs[2]])
    n_tx = len(tx_acc)
    t_wash = best_of(lambda: wash.wash_sale_blocks(*wargs, **wkw), args.repeat)
    record("wash_sale_blocks", n_tx, "transactions", t_wash, n_tx,
           once(lambda: ref.wash_sale_blocks_reference(*wargs, **wkw)))

    # Wash-sale accounting: each household's transactions replayed (chronologically).
    order = np.lexsort((wargs[4], wargs[0]))
    hh = wargs[0][order]
    bounds = np.flatnonzero(np.r_[True, hh[1:] != hh[:-1], True])
    tx_price = tx[Col.price].to_numpy(zero_copy_only=False)
    acc_taxable = taxable_acc

    def replay(reference=False, limit=None):
        for h in range(len(bounds) - 1 if limit is None else min(limit, len(bounds) - 1)):
            sel = order[bounds[h]:bounds[h + 1]]
            a = (wargs[4][sel], wargs[2][sel], wargs[3][sel], wargs[1][sel], wargs[5][sel],
                 np.floor(wargs[6][sel]), tx_price[sel], acc_taxable)
            if reference:
                ref.wash_sale_accounting_reference(*a)
            else:
                washsale.wash_sale_accounting(*a)
    limit = 200
    n_ref_tx = int(bounds[min(limit, len(bounds) - 1)])
    record("wash_sale_accounting", n_tx, "transactions", best_of(replay, 1), n_ref_tx,
           once(lambda: replay(True, limit)))

    # Rounding: one sell line per lot relieved, one buy line per position.
    sold = relief_out.shares_sold > 0
    lot_pos = np.repeat(np.arange(n_pos), np.diff(offsets))
    line_pos = np.r_[lot_pos[sold], np.arange(n_pos)]
    line_side = np.r_[np.full(sold.sum(), wash.SELL), np.full(n_pos, wash.BUY)].astype(np.int8)
    line_order = np.lexsort((line_side, shard["position_account"][line_pos]))
    line_pos, line_side = line_pos[line_order], line_side[line_order]
    line_acc = shard["position_account"][line_pos]
    line_price = np.nan_to_num(shard["price"][line_pos], nan=1.0)
    line_lot = np.r_[shard["quantity"][sold], np.zeros(n_pos)][line_order]
    line_dollars = np.r_[relief_out.shares_sold[sold] * shard["price"][lot_pos[sold]],
                         rng.random(n_pos) * 2000][line_order]
    n_acc = accounts.num_rows
    acc_offsets = np.searchsorted(line_acc, np.arange(n_acc + 1)).astype(np.int64)
    rargs = (acc_offsets, line_side, line_price, shard["fractional"][line_pos],
             np.nan_to_num(line_dollars), line_lot, accounts[Col.cash].to_numpy(),
             accounts[Col.min_cash].to_numpy() + accounts[Col.reserve_cash].to_numpy(),
             accounts[Col.min_trade].to_numpy())
    n_lines = len(line_side)
    n_ref_lines = int(acc_offsets[min(200, n_acc)])
    ref_rargs = (acc_offsets[: min(200, n_acc) + 1],) + rargs[1:6] + tuple(a[:200] for a in rargs[6:])
    record("round_trades", n_lines, "lines", best_of(lambda: rounding.round_trades(*rargs), args.repeat),
           n_ref_lines, once(lambda: ref.round_trades_reference(*ref_rargs)))

    print(f"book: {args.accounts} accounts (seed {args.seed}), {n_pos} positions, {n_lots} lots, "
          f"{n_tx} transactions; built in {build_s:.1f} s; {platform.processor() or platform.machine()}")
    head = f"{'kernel':<24}{'unit':>13}{'items':>10}{'numba s':>10}{'numba /s':>13}{'ref /s':>11}{'speedup':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        refs = f"{r['reference_per_s']:>11,.0f}" if r["reference_per_s"] else f"{'':>11}"
        speed = f"{r['speedup']:>8,.0f}x" if r["speedup"] else f"{'':>9}"
        print(f"{r['kernel']:<24}{r['unit']:>13}{r['items']:>10,}{r['numba_s']:>10.4f}"
              f"{r['numba_per_s']:>13,.0f}{refs}{speed}")
    out = Path(__file__).resolve().parent / "results" / "kernels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(accounts=args.accounts, seed=args.seed, positions=n_pos,
                                   lots=n_lots, transactions=n_tx, rows=rows,
                                   machine=platform.machine(), python=platform.python_version()),
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
