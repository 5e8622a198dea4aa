"""Reading and validating books: every whole-book error and every account-level rejection."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.book import synth
from engine.book.storage import read_book, write_book
from engine.book.validate import validate
from engine.contract import schema
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError, SchemaError
from engine.contract.schema import Col, Reject

AS_OF = synth.AS_OF


def with_value(table: pa.Table, column: str, row: int, value) -> pa.Table:
    """``table`` with one cell replaced."""
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type))


def first_lot_row(tables, account_id: str) -> int:
    return int(np.flatnonzero(np.asarray(pc.equal(tables["lots"].column(Col.account_id), account_id)))[0])


def rejections_of(tables) -> list[dict]:
    return validate(tables, AS_OF, PolicyConfig()).to_pylist()


def only(rows: list[dict], **expected) -> dict:
    """The single rejection row; asserts that nothing else was rejected."""
    assert len(rows) == 1, rows
    row = rows[0]
    for key, value in expected.items():
        assert row[key] == value, (key, row)
    return row


@pytest.fixture
def tables(clean_tables):
    return dict(clean_tables)


def test_clean_book_has_no_rejections(tables):
    assert rejections_of(tables) == []


# --- account-level problems: the account is rejected alone -----------------

def test_unknown_security_in_a_lot(tables):
    aid = tables["lots"].column(Col.account_id)[0].as_py()
    row = first_lot_row(tables, aid)
    lid = tables["lots"].column(Col.lot_id)[row].as_py()
    tables["lots"] = with_value(tables["lots"], Col.security_id, row, "NOPE")
    found = only(rejections_of(tables), account_id=aid, table="lots", key=f"{aid}/{lid}",
                 rule=Reject.unknown_security)
    assert "'NOPE'" in found["message"] and "not in the securities table" in found["message"]


@pytest.mark.parametrize("bad, rule", [(0.0, Reject.bad_quantity), (-3.0, Reject.bad_quantity)])
def test_quantity_not_positive(tables, bad, rule):
    aid = tables["lots"].column(Col.account_id)[5].as_py()
    row = first_lot_row(tables, aid)
    tables["lots"] = with_value(tables["lots"], Col.quantity, row, bad)
    found = only(rejections_of(tables), account_id=aid, rule=rule, table="lots")
    assert "must be > 0" in found["message"]


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_cost_basis_negative_or_nan(tables, bad):
    aid = tables["lots"].column(Col.account_id)[7].as_py()
    row = first_lot_row(tables, aid)
    tables["lots"] = with_value(tables["lots"], Col.cost_basis, row, bad)
    found = only(rejections_of(tables), account_id=aid, rule=Reject.bad_cost_basis)
    assert ">= 0" in found["message"]


def test_acquired_after_as_of(tables):
    aid = tables["lots"].column(Col.account_id)[9].as_py()
    row = first_lot_row(tables, aid)
    tables["lots"] = with_value(tables["lots"], Col.acquired, row, AS_OF + dt.timedelta(days=1))
    found = only(rejections_of(tables), account_id=aid, rule=Reject.future_acquired)
    assert str(AS_OF + dt.timedelta(days=1)) in found["message"]


def test_lot_acquired_on_as_of_is_fine(tables):
    row = first_lot_row(tables, tables["lots"].column(Col.account_id)[9].as_py())
    tables["lots"] = with_value(tables["lots"], Col.acquired, row, AS_OF)
    assert rejections_of(tables) == []


def _held_by_one(tables) -> tuple[str, str, int]:
    """A security held by exactly one account, that account, and the security's row."""
    lots = tables["lots"]
    pairs = lots.group_by([Col.security_id]).aggregate([(Col.account_id, "count_distinct")])
    one = pairs.filter(pc.equal(pairs.column(f"{Col.account_id}_count_distinct"), 1))
    ids = tables["securities"].column(Col.security_id).to_pylist()
    models = set(tables["models"].column(Col.security_id).to_pylist())
    for sid in one.column(Col.security_id).to_pylist():
        if sid not in models:
            aid = lots.filter(pc.equal(lots.column(Col.security_id), sid)).column(Col.account_id)[0].as_py()
            return sid, aid, ids.index(sid)
    # every singly-held security is in a model: give one account a legacy holding instead
    sid = "LEG002"
    row = first_lot_row(tables, lots.column(Col.account_id)[0].as_py())
    tables["lots"] = with_value(lots, Col.security_id, row, sid)
    return sid, lots.column(Col.account_id)[0].as_py(), ids.index(sid)


def test_missing_price_of_held_security(tables):
    sid, aid, row = _held_by_one(tables)
    tables["securities"] = with_value(tables["securities"], Col.price, row, None)
    found = only(rejections_of(tables), account_id=aid, table="securities", key=sid,
                 rule=Reject.missing_price)
    assert f"account {aid} holds security {sid}, which has no usable price" in found["message"]


def test_stale_price_of_held_security(tables):
    sid, aid, row = _held_by_one(tables)
    old = AS_OF - dt.timedelta(days=PolicyConfig().stale_price_days + 1)
    tables["securities"] = with_value(tables["securities"], Col.price_date, row, old)
    found = only(rejections_of(tables), account_id=aid, key=sid, rule=Reject.stale_price)
    assert str(old) in found["message"]


def test_price_exactly_at_the_age_limit_is_not_stale(tables):
    sid, aid, row = _held_by_one(tables)
    edge = AS_OF - dt.timedelta(days=PolicyConfig().stale_price_days)
    tables["securities"] = with_value(tables["securities"], Col.price_date, row, edge)
    assert rejections_of(tables) == []


def test_missing_price_of_targeted_security_rejects_every_account_targeting_it(tables):
    # the substitute ETF of emerging markets is in no account's holdings or choices by default;
    # make it the default product of that class in every template, then unprice it
    models = tables["models"]
    target = "ETF04S"
    templates = tables["templates"]
    em = pc.equal(templates.column(Col.asset_class), "emerging_markets")
    model_col = pc.if_else(em, pa.scalar(f"M-{target}"), templates.column(Col.model_id))
    tables["templates"] = templates.set_column(templates.column_names.index(Col.model_id),
                                               templates.schema.field(Col.model_id), model_col)
    sec_row = tables["securities"].column(Col.security_id).to_pylist().index(target)
    tables["securities"] = with_value(tables["securities"], Col.price, sec_row, float("nan"))
    rows = rejections_of(tables)
    accounts, allocations = tables["accounts"], tables["allocations"]
    em_templates = set(pc.unique(templates.filter(em).column(Col.template_id)).to_pylist())
    removed = {(a, c) for a, c, w in zip(*(allocations.column(n).to_pylist()
                                            for n in (Col.account_id, Col.asset_class, Col.weight))) if w == 0}
    chosen = {(a, c) for a, c, m in zip(*(allocations.column(n).to_pylist()
                                           for n in (Col.account_id, Col.asset_class, Col.model_id))) if m}
    expected = sorted(a for a, t in zip(accounts.column(Col.account_id).to_pylist(),
                                        accounts.column(Col.template_id).to_pylist())
                      if t in em_templates and (a, "emerging_markets") not in removed
                      and (a, "emerging_markets") not in chosen)
    assert expected, "the fixture book should have accounts targeting emerging markets"
    assert sorted(r[Col.account_id] for r in rows) == expected
    assert {r[Col.rule] for r in rows} == {Reject.missing_price}
    assert all(f"targets product M-{target}" in r[Col.message] for r in rows)


def test_unknown_template(tables):
    aid = tables["accounts"].column(Col.account_id)[3].as_py()
    tables["accounts"] = with_value(tables["accounts"], Col.template_id, 3, "T-GONE")
    allocations = tables["allocations"]
    tables["allocations"] = allocations.filter(pc.not_equal(allocations.column(Col.account_id), aid))
    found = only(rejections_of(tables), account_id=aid, table="accounts", rule=Reject.unknown_template)
    assert "'T-GONE'" in found["message"]


def _allocation(tables, aid: str, asset_class: str, weight=None, model_id=None) -> None:
    allocations = tables["allocations"]
    keep = pc.invert(pc.and_(pc.equal(allocations.column(Col.account_id), aid),
                             pc.equal(allocations.column(Col.asset_class), asset_class)))
    row = pa.table({Col.account_id: [aid], Col.asset_class: [asset_class], Col.weight: [weight],
                    Col.model_id: [model_id]}, schema=schema.ALLOCATIONS)
    tables["allocations"] = pa.concat_tables([allocations.filter(keep), row])


def _template_row(tables, aid: str, asset_class: str) -> dict:
    accounts = tables["accounts"]
    tid = accounts.filter(pc.equal(accounts.column(Col.account_id), aid)).column(Col.template_id)[0].as_py()
    templates = tables["templates"].to_pylist()
    return next(r for r in templates if r[Col.template_id] == tid and r[Col.asset_class] == asset_class)


def test_custom_weight_outside_bounds(tables):
    aid = tables["accounts"].column(Col.account_id)[2].as_py()
    row = _template_row(tables, aid, "us_large_cap")
    _allocation(tables, aid, "us_large_cap", weight=row[Col.max_weight] + 0.01)
    found = only(rejections_of(tables), account_id=aid, table="allocations",
                 key=f"{aid}/us_large_cap", rule=Reject.allocation_out_of_bounds)
    assert "outside the template" in found["message"]


def test_custom_weight_at_the_bound_is_fine(tables):
    aid = tables["accounts"].column(Col.account_id)[2].as_py()
    row = _template_row(tables, aid, "us_large_cap")
    _allocation(tables, aid, "us_large_cap", weight=row[Col.max_weight])
    assert rejections_of(tables) == []


def test_product_not_an_allowed_alternative(tables):
    aid = tables["accounts"].column(Col.account_id)[4].as_py()
    _allocation(tables, aid, "us_large_cap", model_id="M-ETF06A")   # a bond ETF
    found = only(rejections_of(tables), account_id=aid, rule=Reject.product_not_allowed)
    assert "'M-ETF06A' is not allowed for us_large_cap" in found["message"]
    assert "DI-US-LARGE" in found["message"]


def test_direct_index_alternative_is_allowed(tables):
    aid = tables["accounts"].column(Col.account_id)[4].as_py()
    _allocation(tables, aid, "us_large_cap", model_id="DI-US-LARGE")
    assert rejections_of(tables) == []


def test_restriction_naming_unknown_security(tables):
    aid = tables["accounts"].column(Col.account_id)[6].as_py()
    extra = pa.table({Col.account_id: [aid], Col.rule: ["never_sell"], Col.security_id: ["GHOST"],
                      Col.tag: [None]}, schema=schema.RESTRICTIONS)
    tables["restrictions"] = pa.concat_tables([tables["restrictions"], extra])
    found = only(rejections_of(tables), account_id=aid, table="restrictions",
                 key=f"{aid}/never_sell/GHOST", rule=Reject.unknown_restriction_security)
    assert "'GHOST'" in found["message"]


def test_planted_bad_rows_are_exactly_the_rejections():
    tables = synth.generate_tables(600, seed=5, bad_fraction=0.004)
    rows = rejections_of(tables)
    by_rule: dict[str, int] = {}
    for row in rows:
        by_rule[row[Col.rule]] = by_rule.get(row[Col.rule], 0) + 1
    planted = max(1, round(0.004 * 600))
    assert by_rule == {rule: planted for rule in (
        Reject.unknown_security, Reject.missing_price, Reject.stale_price, Reject.bad_quantity,
        Reject.bad_cost_basis, Reject.future_acquired, Reject.unknown_template,
        Reject.allocation_out_of_bounds, Reject.product_not_allowed,
        Reject.unknown_restriction_security)}
    assert len({row[Col.account_id] for row in rows}) == len(rows)     # one account per planted row


# --- whole-book problems: BookError, nothing usable -------------------------

@pytest.fixture
def book_dir(tmp_path, clean_tables):
    path = tmp_path / "book"
    write_book(str(path), AS_OF, clean_tables)
    return path


def test_round_trip_local(book_dir, clean_tables):
    book = read_book(str(book_dir))
    assert book.as_of == AS_OF and book.rejected == frozenset()
    for name, table in clean_tables.items():
        assert book.table(name).equals(table), name


def test_round_trip_file_and_memory_uris(book_dir, clean_tables):
    assert read_book(f"file://{book_dir}").lots.equals(clean_tables["lots"])
    write_book("memory://canopy-tests/book", AS_OF, clean_tables, overwrite=True)
    assert read_book("memory://canopy-tests/book").accounts.equals(clean_tables["accounts"])


def test_missing_book_json(book_dir):
    (book_dir / "book.json").unlink()
    with pytest.raises(BookError, match="no book.json"):
        read_book(str(book_dir))


def test_bad_schema_version(book_dir):
    (book_dir / "book.json").write_text('{"schema_version": 3, "as_of": "2026-11-20"}')
    with pytest.raises(BookError, match="schema_version 3 is not supported; expected 1 or 2"):
        read_book(str(book_dir))


def test_missing_table(book_dir):
    for part in (book_dir / "templates").iterdir():
        part.unlink()
    (book_dir / "templates").rmdir()
    with pytest.raises(BookError, match=r"table 'templates': missing table folder templates/"):
        read_book(str(book_dir))


def test_unreadable_table(book_dir):
    part = next((book_dir / "lots").iterdir())
    part.write_bytes(b"this is not parquet")
    with pytest.raises(BookError, match=r"table 'lots': unreadable Parquet dataset"):
        read_book(str(book_dir))


def test_wrong_column_type(tmp_path, clean_tables):
    lots = clean_tables["lots"]
    index = lots.column_names.index(Col.quantity)
    bad = lots.set_column(index, pa.field(Col.quantity, pa.string()),
                          pc.cast(lots.column(Col.quantity), pa.string()))
    bad = bad.set_column(index, pa.field(Col.quantity, pa.string()),
                         pa.array(["many"] + bad.column(Col.quantity).to_pylist()[1:]))
    _write_raw(tmp_path, clean_tables, lots=bad)
    with pytest.raises(SchemaError) as info:
        read_book(str(tmp_path / "book"))
    message = str(info.value)
    assert "table 'lots', column 'quantity'" in message
    assert "cannot cast string to double" in message


def test_missing_column(tmp_path, clean_tables):
    _write_raw(tmp_path, clean_tables, accounts=clean_tables["accounts"].drop_columns([Col.harvest]))
    with pytest.raises(SchemaError, match=r"column 'harvest': missing column; expected harvest \(bool\)"):
        read_book(str(tmp_path / "book"))


def _write_raw(tmp_path, tables, **replaced):
    """Write a book without conforming, so that wrong schemas reach the reader."""
    import json

    import pyarrow.parquet as pq

    root = tmp_path / "book"
    for name, table in {**tables, **replaced}.items():
        (root / name).mkdir(parents=True)
        pq.write_table(table, root / name / "part-00000.parquet")
    (root / "book.json").write_text(json.dumps({"schema_version": schema.SCHEMA_VERSION, "as_of": str(AS_OF)}))


def _book_error(tmp_path, tables, **replaced) -> BookError:
    write_book(str(tmp_path / "book"), AS_OF, {**tables, **replaced})
    with pytest.raises(BookError) as info:
        read_book(str(tmp_path / "book"))
    return info.value


def test_duplicate_security_id(tmp_path, clean_tables):
    securities = clean_tables["securities"]
    error = _book_error(tmp_path, clean_tables,
                        securities=pa.concat_tables([securities, securities.slice(3, 1)]))
    assert (error.table, error.key) == ("securities", securities.column(Col.security_id)[3].as_py())
    assert "duplicate key security_id" in str(error) and "occurs 2 times" in str(error)


def test_duplicate_lot_key(tmp_path, clean_tables):
    lots = clean_tables["lots"]
    error = _book_error(tmp_path, clean_tables, lots=pa.concat_tables([lots, lots.slice(10, 1)]))
    aid, lid = lots.column(Col.account_id)[10].as_py(), lots.column(Col.lot_id)[10].as_py()
    assert (error.table, error.column, error.key) == ("lots", "account_id/lot_id", f"{aid}/{lid}")


def test_duplicate_keys_by_sorted_codes_and_by_hashing_say_the_same(clean_tables, monkeypatch):
    """check_keys sorts integer codes; where the columns have too many distinct values to combine
    it hashes the rows instead.  Both name the first duplicated key, its count and how many."""
    from engine.book import validate

    lots = clean_tables["lots"]
    tables = {**clean_tables, "lots": pa.concat_tables([lots, lots.slice(10, 1), lots.slice(3, 2), lots.slice(3, 1)])}
    messages = []
    for codes in (validate._key_codes, lambda table, key: None):
        monkeypatch.setattr(validate, "_key_codes", codes)
        with pytest.raises(BookError) as info:
            validate.check_keys(tables)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    aid, lid = lots.column(Col.account_id)[3].as_py(), lots.column(Col.lot_id)[3].as_py()
    assert f"'lot_id': '{lid}'" in messages[0] and f"'{aid}'" in messages[0]
    assert "occurs 3 times (3 duplicated key(s) in all)" in messages[0]


def test_empty_risk_model(tmp_path, clean_tables):
    error = _book_error(tmp_path, clean_tables,
                        factor_exposures=schema.empty(schema.FACTOR_EXPOSURES))
    assert error.table == "factor_exposures" and "risk model is empty" in str(error)


def test_model_weights_not_summing_to_one(tmp_path, clean_tables):
    models = clean_tables["models"]
    row = models.column(Col.model_id).to_pylist().index("M-ETF00A")
    error = _book_error(tmp_path, clean_tables, models=with_value(models, Col.weight, row, 0.9))
    assert (error.table, error.key) == ("models", "M-ETF00A")
    assert "sum" in str(error) and "0.9" in str(error)


def test_template_referencing_unknown_model(tmp_path, clean_tables):
    templates = clean_tables["templates"]
    error = _book_error(tmp_path, clean_tables,
                        templates=with_value(templates, Col.model_id, 0, "M-MISSING"))
    assert (error.table, error.column) == ("templates", Col.model_id)
    assert "'M-MISSING', which is not in the models table" in str(error)


def test_book_error_leaves_nothing_half_read(tmp_path, clean_tables):
    """A BookError is raised before any Book exists: callers cannot use a partial book."""
    error = _book_error(tmp_path, clean_tables, factor_covariance=schema.empty(schema.FACTOR_COVARIANCE))
    assert isinstance(error, BookError) and error.table == "factor_covariance"


# --- object storage for real ------------------------------------------------

@pytest.mark.s3
def test_round_trip_s3(s3_server, clean_tables):
    uri = "s3://canopy-test/books/small"
    write_book(uri, AS_OF, clean_tables, storage_options=s3_server)
    book = read_book(uri, storage_options=s3_server)
    for name, table in clean_tables.items():
        assert book.table(name).equals(table), name
    assert book.rejections.num_rows == 0


# --- a household's read: what a question about one account needs ------------

@pytest.fixture(scope="module")
def saved_book(tmp_path_factory):
    """A 64-account book with planted bad rows, in part files of 16 accounts, with saves laid over it:
    a change of one account of a household and an account the portal created in that household."""
    from engine.book.customizations import CustomizationStore
    from engine.contract.schema import Action

    uri = str(tmp_path_factory.mktemp("household-read") / "book")
    synth.generate(uri, 64, seed=5, bad_fraction=0.02, chunk_accounts=16)
    book = read_book(uri)
    accounts = book.accounts.to_pylist()
    household = next(r[Col.household_id] for r in accounts if r[Col.household_id]
                     and sum(s[Col.household_id] == r[Col.household_id] for s in accounts) > 1)
    member = next(r for r in accounts if r[Col.household_id] == household)
    store = CustomizationStore(uri)
    store.save(member[Col.account_id], Action.change, None,
               {"account": {Col.min_cash: 1234.5}, "restrictions": [{"rule": "exclude", "security_id": None,
                                                                     "tag": "fossil_fuel"}]}, "test")
    lots = book.lots.filter(pc.equal(book.lots.column(Col.account_id), member[Col.account_id])).slice(0, 2)
    store.save("NEW0001", Action.create, None,
               {"account": {**member, Col.account_id: "NEW0001"},
                "lots": lots.drop_columns([Col.account_id]).to_pylist()}, "test")
    return uri, household


def test_a_household_read_is_the_whole_books_rows_of_its_accounts(saved_book):
    uri, created_in = saved_book
    whole = read_book(uri)
    ids = whole.accounts.column(Col.account_id).to_pylist()
    households = pc.coalesce(whole.accounts.column(Col.household_id), whole.accounts.column(Col.account_id)).to_pylist()
    assert "NEW0001" in ids and whole.rejected and whole.rejections.num_rows
    for asked in ids + ["NOBODY"]:
        members = [a for a, h in zip(ids, households) if h == households[ids.index(asked)]] if asked in ids else []
        scoped = read_book(uri, households_of=[asked])
        assert ("NEW0001" in members) == (asked in ids and households[ids.index(asked)] == created_in)
        for name in schema.BOOK_TABLES:
            table = whole.table(name)
            if name in ("accounts", "restrictions", "allocations", "lots", "transactions"):
                table = table.filter(pc.is_in(table.column(Col.account_id), value_set=pa.array(members, pa.string())))
            assert scoped.table(name).equals(table), (asked, name)
        rejections = whole.rejections.filter(pc.is_in(whole.rejections.column(Col.account_id),
                                                      value_set=pa.array(members, pa.string())))
        assert scoped.rejections.equals(rejections), asked
        assert scoped.rejected == whole.rejected & set(members)
        assert scoped.fingerprints == whole.fingerprints


def test_a_household_read_of_account_ids_not_stored_as_strings(tmp_path, clean_tables):
    """Where the files' account_id is not a string column, the read cannot filter as it reads: it reads the
    table whole, conforms it and then keeps the household's rows."""
    lots = clean_tables["lots"]
    index = lots.column_names.index(Col.account_id)
    wide = lots.set_column(index, pa.field(Col.account_id, pa.large_string()),
                           lots.column(Col.account_id).cast(pa.large_string()))
    _write_raw(tmp_path, clean_tables, lots=wide)
    account = lots.column(Col.account_id)[0].as_py()
    scoped = read_book(str(tmp_path / "book"), households_of=[account])
    mine = scoped.lots.column(Col.account_id).to_pylist()
    assert account in mine and set(mine) <= set(scoped.accounts.column(Col.account_id).to_pylist())
    assert scoped.lots.equals(read_book(str(tmp_path / "book")).lots.filter(
        pc.is_in(lots.column(Col.account_id), value_set=scoped.accounts.column(Col.account_id))))
