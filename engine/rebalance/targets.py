"""Targets: from templates, custom allocations, models and screens to each account's target.

The overlay promise: the investment committee changes a template or a model in
one place and every account that follows it moves the next night, each keeping
its own customizations.  This module turns the book's ``templates``,
``allocations``, ``models``, ``restrictions`` and ``securities`` into a target
weight per (account, security), vectorized over the whole book with sparse
matrices.

For account a with template t(a), asset class c and security i:

1. Asset-class weights.  ``u[a,c]`` is the template weight, replaced by the
   account's custom weight where ``allocations`` gives one (0 removes the
   class); then ``W[a,c] = u[a,c] / Σ_c u[a,c]``, so each row sums to 1.
2. Products.  ``m(a,c)`` is the template's model for c, replaced by the
   account's choice where ``allocations`` gives one (it must be the default or
   one of the template's ``alternatives``).
3. Screens.  ``E[a,i] = 1`` when an ``exclude`` restriction of a names i or a
   tag i carries.  The excluded share of product m in account a is
   ``L[a,m] = Σ_i E[a,i] M[m,i]`` (M: models × securities, rows summing to 1),
   and the weight of the excluded securities goes to the rest of the same
   product, pro rata:

       w[a,i] = (1 − E[a,i]) Σ_c W[a,c] M[m(a,c),i] / (1 − L[a,m(a,c)])

   In matrix form ``w = ((A ⊘ K) M) ∘ (1 − E)``, with ``A[a,m] = Σ_{c: m(a,c)=m}
   W[a,c]`` and ``K[a,m] = 1 − L[a,m]``: one sparse product for the whole book.
   ``never_buy`` and ``never_sell`` leave the target as it is: the solver
   finds the best proxy through the risk model.
4. Substitutes (``PolicyConfig.substitutes``): the securities each account
   may buy besides its targets, ``Targets.substitutes``
   (:mod:`engine.rebalance.substitutes`).  A screen that empties a product
   whose asset class has one keeps the product's weights, as ``never_buy``
   does, instead of rejecting the account.

Units: every weight is a fraction of the account's value (dimensionless).

Rejections.  Custom allocations outside the template's bounds or alternatives
are found by :func:`engine.book.validate.allocation_rejections` (run here only for
tables that were not validated).  Found here: screens that remove every
security of a product the account holds a positive weight of
(:data:`REJECT_SCREEN_EMPTIES_PRODUCT`, unless a substitute stands in; the
account is rejected rather than silently moving the weight to other asset
classes: the advisor chooses another product, removes the asset class, or
lifts the screen), and two
allocation rows of one asset class that disagree
(:data:`REJECT_CONFLICTING_ALLOCATION`); on tables not validated, also a
chosen product missing from the models table (:data:`REJECT_UNKNOWN_PRODUCT`).
A rejected account's rows are empty.

Pure: Arrow tables in, NumPy/SciPy arrays out; no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from engine.book.validate import Rejections, allocation_rejections, unusable_securities
from engine.contract import schema
from engine.contract.arrow import index_in, strings
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError
from engine.contract.schema import Col, Reject, Rule
from engine.rebalance import substitutes

# Rule names of rejections found here.  They belong in ``schema.Reject``; until
# they are added there, they are spelled once, here.
REJECT_SCREEN_EMPTIES_PRODUCT = Reject.screen_empties_product
REJECT_CONFLICTING_ALLOCATION = Reject.conflicting_allocation
REJECT_UNKNOWN_PRODUCT = Reject.unknown_product

#: A product whose kept share ``1 − L[a,m]`` is at most this is empty.
EMPTY_PRODUCT_TOLERANCE = 1e-9

_TARGET_TABLES = ("securities", "models", "templates", "accounts", "restrictions", "allocations")


@dataclass(frozen=True)
class Targets:
    """Target weights of every account of a book.

    Attributes
    ----------
    account_ids : np.ndarray of str, shape (n_accounts,)
        The accounts table's order.
    security_ids : np.ndarray of str, shape (n_securities,)
        The securities table's order.
    weights : scipy.sparse.csr_matrix, shape (n_accounts, n_securities)
        Target weight ``w[a,i]``, a fraction of account value.  A usable
        account's row sums to 1; a rejected account's row is empty.
    asset_classes : np.ndarray of str, shape (n_classes,)
        Sorted union of the templates' and the securities' asset classes.
    class_weights : np.ndarray of float64, shape (n_accounts, n_classes)
        ``W[a,c]``, the account's asset-class targets after custom weights
        and rescaling; rows sum to 1 (0 for rejected accounts).
    bands : np.ndarray of float64, shape (n_accounts, n_classes)
        The template's allowed absolute drift of each asset class; 0 for a
        class outside the template and for rejected accounts.
    class_models : np.ndarray of str, shape (n_accounts, n_classes)
        The product (model_id) chosen for each asset class of positive
        weight; ``""`` elsewhere.
    security_classes : np.ndarray of int64, shape (n_securities,)
        Index into ``asset_classes`` of each security's asset class.
    usable : np.ndarray of bool, shape (n_accounts,)
        The account has a target (not rejected by validation or here).
    rejections : pa.Table of ``schema.REJECTIONS``
        What was found while building targets that validation did not
        already report.
    substitutes : scipy.sparse.csr_matrix, shape (n_accounts, n_securities)
        The securities each account may buy besides its targets, each valued
        ``1 +`` the asset class (row of ``asset_classes``) it stands in for
        (:mod:`engine.rebalance.substitutes`); empty with ``PolicyConfig.substitutes`` off.
    restricted_classes : np.ndarray of bool, shape (n_accounts, n_classes)
        The account targets a security of the class that it may not buy
        (``never_buy``, ``exclude``): it needs a substitute there.
    """

    account_ids: np.ndarray
    security_ids: np.ndarray
    weights: sp.csr_matrix
    asset_classes: np.ndarray
    class_weights: np.ndarray
    bands: np.ndarray
    class_models: np.ndarray
    security_classes: np.ndarray
    usable: np.ndarray
    rejections: pa.Table
    substitutes: sp.csr_matrix | None = None         # None: none (filled in by __post_init__)
    restricted_classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = (len(self.account_ids), len(self.security_ids))
        if self.substitutes is None:
            object.__setattr__(self, "substitutes", sp.csr_matrix(shape))
        if self.restricted_classes is None:
            object.__setattr__(self, "restricted_classes", np.zeros((shape[0], len(self.asset_classes)), bool))

    def take(self, rows: np.ndarray) -> "Targets":
        """The targets of the accounts at ``rows`` (a shard's), securities and classes kept.

        ``rejections`` of the subset is empty: they were reported with the whole book.
        """
        rows = np.asarray(rows, dtype=np.int64)
        return Targets(account_ids=self.account_ids[rows], security_ids=self.security_ids,
                       weights=self.weights[rows], asset_classes=self.asset_classes,
                       class_weights=self.class_weights[rows], bands=self.bands[rows],
                       class_models=self.class_models[rows], security_classes=self.security_classes,
                       usable=self.usable[rows], rejections=self.rejections.slice(0, 0),
                       substitutes=self.substitutes[rows], restricted_classes=self.restricted_classes[rows])

    def of(self, account_ids) -> "Targets":
        """The targets of ``account_ids``, in that order (each must be one of :attr:`account_ids`)."""
        rows = index_in(np.asarray(account_ids, dtype=object), self.account_ids)
        if (rows < 0).any():
            raise KeyError(f"no target for accounts {list(np.asarray(account_ids)[rows < 0][:3])}")
        return self.take(rows)

    def target_of(self, account_id: str) -> dict[str, float]:
        """``{security_id: weight}`` of one account's nonzero target weights."""
        row = np.flatnonzero(self.account_ids == account_id)
        if row.size == 0:
            raise ValueError(f"account {account_id!r} is not in these targets")
        start, stop = self.weights.indptr[row[0]], self.weights.indptr[row[0] + 1]
        return dict(zip(self.security_ids[self.weights.indices[start:stop]].tolist(),
                        self.weights.data[start:stop].tolist()))


# --------------------------------------------------------------------------
# Helpers.

def _conform(tables: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
    names = _TARGET_TABLES + (("substitutes",) if tables.get("substitutes") is not None else ())
    return {name: schema.conform(tables[name], schema.BOOK_TABLES[name], name=name) for name in names}


def _is_book(source: Any) -> bool:
    # Duck-typed: engine.book.storage imports fsspec, which pure code must not.
    return hasattr(source, "tables") and hasattr(source, "rejected") and not isinstance(source, Mapping)


def restriction_matrix(restrictions: pa.Table, securities: pa.Table, account_ids: np.ndarray,
                       security_ids: np.ndarray, rule: str = Rule.exclude) -> sp.csr_matrix:
    """``E[a,i] = 1`` where a ``rule`` restriction of account a covers security i.

    The one definition of what a restriction covers: the security it names, or every
    security carrying its tag (``securities.tags``).  Rows for unknown accounts or securities are
    ignored here (validation reports them); ``security_ids`` may be any subset
    of the securities table, in any order (the columns follow it).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_accounts, n_securities), values 0/1.
    """
    n_accounts, n_securities = len(account_ids), len(security_ids)
    screens = restrictions.filter(pc.equal(restrictions.column(Col.rule), rule))
    account = index_in(screens.column(Col.account_id), account_ids)
    security = index_in(screens.column(Col.security_id), security_ids)
    by_security = (account >= 0) & (security >= 0)
    excluded = sp.csr_matrix((np.ones(int(by_security.sum())), (account[by_security], security[by_security])),
                             shape=(n_accounts, n_securities))
    tagged = screens.filter(pc.is_valid(screens.column(Col.tag)))
    tags = securities.column(Col.tags)
    if tagged.num_rows and pc.sum(pc.list_value_length(tags)).as_py():
        flat_tags = pc.list_flatten(tags)
        carrier_row = np.asarray(pc.list_parent_indices(tags).to_numpy(zero_copy_only=False), dtype=np.int64)
        # ``security_ids`` may be a subset of the table, in another order (a shard's universe)
        carrier = index_in(securities.column(Col.security_id), security_ids)[carrier_row]
        tag_ids = np.unique(np.asarray(flat_tags.to_numpy(zero_copy_only=False), dtype=str))
        tag_of = index_in(flat_tags, tag_ids)
        known_security = carrier >= 0
        carries = sp.csr_matrix((np.ones(int(known_security.sum())),
                                 (tag_of[known_security], carrier[known_security])),
                                shape=(len(tag_ids), n_securities))
        account = index_in(tagged.column(Col.account_id), account_ids)
        tag = index_in(tagged.column(Col.tag), tag_ids)
        known = (account >= 0) & (tag >= 0)
        screened_tags = sp.csr_matrix((np.ones(int(known.sum())), (account[known], tag[known])),
                                      shape=(n_accounts, len(tag_ids)))
        excluded = excluded + screened_tags @ carries
    excluded = excluded.tocsr()
    excluded.data[:] = 1.0
    excluded.eliminate_zeros()
    return excluded


# --------------------------------------------------------------------------
# The build.

def build_targets(source: Any, *, rejected: Iterable[str] | None = None,
                  policy: PolicyConfig | None = None, as_of: dt.date | None = None) -> Targets:
    """Target weights of every account of a book.

    Parameters
    ----------
    source
        A :class:`engine.book.storage.Book` (validated: its ``rejected`` accounts get
        empty rows) or a mapping of table name to Arrow table (at least
        securities, models, templates, accounts, restrictions, allocations).
    rejected
        Ids of accounts validation rejected; they get empty rows.  With a
        Book, added to ``Book.rejected``.  With a mapping, giving it says the
        tables were validated; leaving it out says they were not, and the
        custom allocations are then checked here
        (:func:`engine.book.validate.allocation_rejections`), what it finds being
        part of ``Targets.rejections``.
    policy
        ``substitutes`` and ``substitute_max_securities`` (:mod:`engine.rebalance.substitutes`);
        the defaults where None.
    as_of
        The business date (a Book's own where None): a security whose price is missing or
        stale then (:func:`engine.book.validate.unusable_securities`) is no substitute;
        without a date, only one without a positive price is left out.

    Returns
    -------
    Targets
        See the module docstring for the formulas.
    """
    if _is_book(source):
        return build_from_tables(_conform(source.tables), rejected=set(source.rejected) | set(rejected or ()),
                                 check_allocations=False, policy=policy, as_of=as_of or source.as_of)
    tables = _conform(source)
    if rejected is None:
        return build_from_tables(tables, rejected=set(), check_allocations=True, policy=policy, as_of=as_of)
    return build_from_tables(tables, rejected=set(rejected), check_allocations=False, policy=policy, as_of=as_of)


def target_tables(source: Any) -> dict[str, pa.Table]:
    """The conformed tables targets are built from, of a :class:`engine.book.storage.Book` or a
    mapping of table name to Arrow table."""
    return _conform(source.tables if _is_book(source) else source)


class _Axes(NamedTuple):
    """The labels of the build's rows and columns."""

    account_ids: np.ndarray     # str, the accounts table's order
    security_ids: np.ndarray    # str, the securities table's order
    asset_classes: np.ndarray   # str, sorted union of the templates' and the securities' asset classes
    template_ids: np.ndarray    # str, sorted distinct
    model_ids: np.ndarray       # str, sorted distinct


def _axes(tables: Mapping[str, pa.Table]) -> _Axes:
    """The accounts, securities, asset classes, templates and models of ``tables``, as str arrays."""
    securities, models, templates, accounts = (tables[n] for n in ("securities", "models", "templates", "accounts"))
    return _Axes(account_ids=strings(accounts, Col.account_id).astype(str),
                 security_ids=strings(securities, Col.security_id).astype(str),
                 asset_classes=np.unique(np.concatenate([strings(templates, Col.asset_class).astype(str),
                                                         strings(securities, Col.asset_class).astype(str)])),
                 template_ids=np.unique(strings(templates, Col.template_id).astype(str)),
                 model_ids=np.unique(strings(models, Col.model_id).astype(str)))


def build_from_tables(tables: Mapping[str, pa.Table], *, rejected: set[str], check_allocations: bool,
                      found: Rejections | None = None, policy: PolicyConfig | None = None,
                      as_of: dt.date | None = None) -> Targets:
    """Targets of conformed ``tables`` (:func:`target_tables`): the formulas of the module docstring.

    ``rejected`` accounts get empty rows; with ``check_allocations`` the custom allocations are
    checked here (the tables were not validated).  What is found is added to ``found`` (a new
    :class:`Rejections` where None) and returned as ``Targets.rejections``.  With
    ``policy.substitutes`` each account's substitutes are found too (:mod:`engine.rebalance.substitutes`;
    ``as_of``: :func:`build_targets`).
    """
    policy = policy or PolicyConfig()
    models, templates = tables["models"], tables["templates"]
    accounts, allocations = tables["accounts"], tables["allocations"]
    found = found or Rejections()
    earlier = []  # rejections found by others but reported here (tables not validated)
    axes = _axes(tables)
    model_weights = _model_matrix(models, axes)
    defaults = _template_defaults(templates, axes)

    bad = np.isin(axes.account_ids, np.asarray(sorted(rejected), dtype=str))
    if check_allocations:
        checked = allocation_rejections(templates, allocations, accounts, models)
        earlier.append(checked)
        bad |= np.isin(axes.account_ids,
                       np.asarray(checked.column(Col.account_id).drop_null().to_pylist(), dtype=str))
    class_weights, bands, class_model = _from_templates(accounts, defaults, axes, bad, found)
    _customize(allocations, axes, class_weights, class_model, bad, found)
    class_weights, held = _rescaled(class_weights, class_model, axes, bad, found)
    blocked = subs = None
    if policy.substitutes:
        blocked = (restriction_matrix(tables["restrictions"], tables["securities"], axes.account_ids,
                                      axes.security_ids, Rule.never_buy)
                   + restriction_matrix(tables["restrictions"], tables["securities"], axes.account_ids,
                                        axes.security_ids)).tocsr()
        unpriced = np.isin(axes.security_ids, unusable_securities(tables["securities"], as_of, policy)
                           if as_of is not None else [])
        subs = substitutes.candidates(tables, index_in(accounts.column(Col.template_id), axes.template_ids),
                                      class_model, held & ~bad[:, None], model_weights, axes, blocked,
                                      policy.substitute_max_securities, unpriced)
    weights = _security_weights(tables, class_weights, class_model, held, model_weights, axes, bad, found, subs)
    class_weights[bad] = 0.0
    bands[bad] = 0.0
    weights.eliminate_zeros()
    weights.sort_indices()

    model_ids = axes.model_ids
    names = np.where(held & ~bad[:, None] & (class_model >= 0),
                     model_ids[np.maximum(class_model, 0)] if len(model_ids) else "", "")
    rejections = found.table()
    if earlier:
        rejections = pa.concat_tables([*earlier, rejections]).combine_chunks()
    security_classes = index_in(tables["securities"].column(Col.asset_class), axes.asset_classes)
    restricted = None
    if subs is not None:   # a substitute is never a target; a rejected account has none
        subs = (subs - subs.multiply(weights > 0)).tocsr()
        subs.data[_entries(subs.indptr, np.flatnonzero(bad))[0]] = 0.0
        subs.eliminate_zeros()
        restricted = substitutes.restricted_classes(weights, blocked, security_classes, len(axes.asset_classes))
    return Targets(account_ids=axes.account_ids, security_ids=axes.security_ids, weights=weights,
                   asset_classes=axes.asset_classes, class_weights=class_weights, bands=bands,
                   class_models=names, security_classes=security_classes, usable=~bad, rejections=rejections,
                   substitutes=subs, restricted_classes=restricted)


def _model_matrix(models: pa.Table, axes: _Axes) -> sp.csr_matrix:
    """``M[m, i]``, the weight (fraction) of security i in model m; rows sum to 1.

    Raises :class:`BookError` for a model holding a security not in the securities table.
    """
    model_row = index_in(models.column(Col.model_id), axes.model_ids)
    model_security = index_in(models.column(Col.security_id), axes.security_ids)
    if (model_security < 0).any():
        row = int(np.argmax(model_security < 0))
        raise BookError(f"model holds security {models.column(Col.security_id)[row].as_py()!r} that is "
                        f"not in the securities table", table="models", column=Col.security_id,
                        key=models.column(Col.model_id)[row].as_py())
    return sp.csr_matrix((models.column(Col.weight).to_numpy(), (model_row, model_security)),
                         shape=(len(axes.model_ids), len(axes.security_ids)))


def _template_defaults(templates: pa.Table, axes: _Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (template × asset class) arrays of the templates: the weight (fraction), the band
    (fraction) and the model (index into ``axes.model_ids``, -1 for none); 0 and -1 where a
    template has no such class."""
    n_templates, n_classes = len(axes.template_ids), len(axes.asset_classes)
    t_row = index_in(templates.column(Col.template_id), axes.template_ids)
    t_class = index_in(templates.column(Col.asset_class), axes.asset_classes)
    default_weight = np.zeros((n_templates, n_classes))
    default_band = np.zeros((n_templates, n_classes))
    default_model = np.full((n_templates, n_classes), -1, dtype=np.int64)
    default_weight[t_row, t_class] = templates.column(Col.weight).to_numpy()
    default_band[t_row, t_class] = templates.column(Col.band).to_numpy()
    default_model[t_row, t_class] = index_in(templates.column(Col.model_id), axes.model_ids)
    return default_weight, default_band, default_model


def _from_templates(accounts: pa.Table, defaults: tuple[np.ndarray, np.ndarray, np.ndarray], axes: _Axes,
                    bad: np.ndarray, found: Rejections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each account's template: its (account × asset class) weights ``u[a,c]``, bands and models.

    ``defaults`` is :func:`_template_defaults`'s answer.  An account (not already ``bad``)
    naming an unknown template is rejected into ``found`` and marked in ``bad``; its rows are
    0 and -1.
    """
    default_weight, default_band, default_model = defaults
    template_of = index_in(accounts.column(Col.template_id), axes.template_ids)
    for row in np.flatnonzero((template_of < 0) & ~bad):
        aid = axes.account_ids[row]
        found.add(aid, "accounts", aid, Reject.unknown_template,
                  f"account {aid} follows template {accounts.column(Col.template_id)[int(row)].as_py()!r}, "
                  f"which is not in the templates table; assign an existing template")
        bad[row] = True
    has_template = template_of >= 0
    class_weights = np.where(has_template[:, None], default_weight[template_of], 0.0)
    bands = np.where(has_template[:, None], default_band[template_of], 0.0)
    class_model = np.where(has_template[:, None], default_model[template_of], -1)
    return class_weights, bands, class_model


def _customize(allocations: pa.Table, axes: _Axes, class_weights: np.ndarray, class_model: np.ndarray,
               bad: np.ndarray, found: Rejections) -> None:
    """Apply the custom allocations in place: a weight replaces ``class_weights[a,c]``, a
    model_id the product ``class_model[a,c]``.  Rows of unknown accounts or asset classes are
    ignored; accounts with rows that disagree are rejected (:func:`_conflicts`)."""
    a_row = index_in(allocations.column(Col.account_id), axes.account_ids)
    a_class = index_in(allocations.column(Col.asset_class), axes.asset_classes)
    keep = (a_row >= 0) & (a_class >= 0)
    if not keep.any():
        return
    rows = allocations.filter(pa.array(keep))
    a_row, a_class = a_row[keep], a_class[keep]
    _conflicts(rows, found, bad, axes.account_ids)
    weight = rows.column(Col.weight)
    has_weight = np.asarray(pc.is_valid(weight).to_numpy(zero_copy_only=False), dtype=bool)
    class_weights[a_row[has_weight], a_class[has_weight]] = \
        np.asarray(pc.fill_null(weight, 0.0).to_numpy(zero_copy_only=False))[has_weight]
    has_model = np.asarray(pc.is_valid(rows.column(Col.model_id)).to_numpy(zero_copy_only=False), dtype=bool)
    class_model[a_row[has_model], a_class[has_model]] = \
        index_in(rows.column(Col.model_id), axes.model_ids)[has_model]


def _rescaled(class_weights: np.ndarray, class_model: np.ndarray, axes: _Axes, bad: np.ndarray,
              found: Rejections) -> tuple[np.ndarray, np.ndarray]:
    """``W[a,c] = u[a,c] / Σ_c u[a,c]`` (rows summing to 1, 0 for ``bad`` accounts), and where it is > 0.

    Rejects (into ``found``, marking ``bad``) accounts whose weights do not sum to more than 0,
    and accounts with a weighted asset class that has no product.  ``class_weights``' rows
    of bad accounts are zeroed in place.
    """
    class_weights[bad] = 0.0
    totals = class_weights.sum(axis=1)
    for row in np.flatnonzero(~bad & ~(totals > 0)):
        aid = axes.account_ids[row]
        found.add(aid, "allocations", aid, Reject.allocation_sum,
                  f"the asset-class weights of account {aid} sum to {totals[row]:.4g}; "
                  f"keep at least one asset class with a positive weight")
        bad[row] = True
    class_weights = np.divide(class_weights, totals[:, None], out=np.zeros_like(class_weights),
                              where=(totals > 0)[:, None] & ~bad[:, None])
    held = class_weights > 0
    for row, col in zip(*np.nonzero(held & (class_model < 0) & ~bad[:, None])):
        aid = axes.account_ids[row]
        found.add(aid, "allocations", f"{aid}/{axes.asset_classes[col]}", REJECT_UNKNOWN_PRODUCT,
                  f"asset class {axes.asset_classes[col]} of account {aid} has no product in the models "
                  f"table; choose a product the template allows")
        bad[row] = True
    return class_weights, held


def _security_weights(tables: Mapping[str, pa.Table], class_weights: np.ndarray, class_model: np.ndarray,
                      held: np.ndarray, model_weights: sp.csr_matrix, axes: _Axes, bad: np.ndarray,
                      found: Rejections, substitutes: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """``w = ((A ⊘ K) M) ∘ (1 − E)``: each account's target weight (fraction) of each security.

    ``A[a,m] = Σ_{c: m(a,c)=m} W[a,c]``, ``K = 1 − E Mᵀ`` the share of each product the
    account's exclude screens ``E`` keep.  Accounts whose screens empty a product they hold
    are rejected (into ``found``, marking ``bad``), unless ``substitutes`` (tagged by asset
    class, :func:`engine.rebalance.substitutes.candidates`) gives the account one for that
    product's class: then the product keeps its weights, as under ``never_buy``, and the
    risk model sizes the substitutes.  The rows of ``bad`` accounts hold zeros (not yet
    eliminated).
    """
    n_accounts, n_securities = len(axes.account_ids), len(axes.security_ids)
    slot_account, slot_class = np.nonzero(held & ~bad[:, None])
    products = sp.csr_matrix((class_weights[slot_account, slot_class],
                              (slot_account, class_model[slot_account, slot_class])),
                             shape=(n_accounts, len(axes.model_ids))).tocoo()
    excluded = restriction_matrix(tables["restrictions"], tables["securities"], axes.account_ids,
                                  axes.security_ids)
    kept = np.ones(products.nnz)
    rescued = np.zeros(products.nnz, bool)
    if excluded.nnz and products.nnz:        # no products: every account rejected already
        screened = np.diff(excluded.indptr)[products.row] > 0
        lost = (excluded @ model_weights.T).tocsr()
        kept[screened] = 1.0 - np.asarray(lost[products.row[screened], products.col[screened]]).ravel()
        for slot in np.flatnonzero(kept <= EMPTY_PRODUCT_TOLERANCE):
            row, model = products.row[slot], products.col[slot]
            classes = (class_model[row] == model) & held[row]
            if substitutes is not None and np.isin(substitutes[row].data.astype(np.int64) - 1,
                                                   np.flatnonzero(classes)).any():
                rescued[slot], kept[slot] = True, 1.0
                continue
            _reject_empty_product(found, axes.account_ids[row], axes.model_ids[model], axes.asset_classes[classes],
                                  model_weights.indptr[model + 1] - model_weights.indptr[model])
            bad[row] = True
    scale = np.divide(products.data, kept, out=np.zeros_like(kept), where=kept > EMPTY_PRODUCT_TOLERANCE)
    scaled = sp.csr_matrix((np.where(rescued, 0.0, scale), (products.row, products.col)), shape=products.shape)
    weights = (scaled @ model_weights).tocsr()
    if excluded.nnz:  # w ∘ (1 − E), on the entries of screened accounts only
        entry, entry_account = _entries(weights.indptr, np.flatnonzero(np.diff(excluded.indptr) > 0))
        entry_key = entry_account * n_securities + weights.indices[entry]
        screen = excluded.tocoo()
        screen_key = screen.row.astype(np.int64) * n_securities + screen.col
        weights.data[entry[np.isin(entry_key, screen_key)]] = 0.0
    if rescued.any():  # products kept whole for their substitutes: not screened
        kept_whole = sp.csr_matrix((products.data[rescued], (products.row[rescued], products.col[rescued])),
                                   shape=products.shape)
        weights = (weights + kept_whole @ model_weights).tocsr()
        weights.sort_indices()
    weights.data[_entries(weights.indptr, np.flatnonzero(bad))[0]] = 0.0
    return weights


def _entries(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a CSR matrix's ``data`` of every entry of ``rows``, and each one's row."""
    starts, counts = indptr[rows].astype(np.int64), np.diff(indptr)[rows].astype(np.int64)
    ends = np.cumsum(counts)
    positions = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - counts), counts)
    return positions, np.repeat(rows.astype(np.int64), counts)


def _conflicts(rows: pa.Table, found: Rejections, bad: np.ndarray, account_ids: np.ndarray) -> None:
    """Reject accounts with two allocation rows of one asset class that disagree."""
    counts = rows.group_by([Col.account_id, Col.asset_class]).aggregate(
        [(Col.weight, "count_distinct"), (Col.model_id, "count_distinct")])
    clash = pc.or_(pc.greater(counts.column(f"{Col.weight}_count_distinct"), 1),
                   pc.greater(counts.column(f"{Col.model_id}_count_distinct"), 1))
    clashes = counts.filter(clash)
    for aid, cls in zip(clashes.column(Col.account_id).to_pylist(), clashes.column(Col.asset_class).to_pylist()):
        mine = rows.filter(pc.and_(pc.equal(rows.column(Col.account_id), aid),
                                   pc.equal(rows.column(Col.asset_class), cls)))
        given = "; ".join(f"weight {w}, model_id {m}" for w, m in zip(
            mine.column(Col.weight).to_pylist(), mine.column(Col.model_id).to_pylist()))
        found.add(aid, "allocations", f"{aid}/{cls}", REJECT_CONFLICTING_ALLOCATION,
                  f"account {aid} has allocation rows for {cls} that disagree ({given}); "
                  f"keep one weight and one product per asset class")
        bad[np.flatnonzero(account_ids == aid)] = True


def _reject_empty_product(found: Rejections, account_id: str, model_id: str, classes: np.ndarray,
                          size: int) -> None:
    where = ", ".join(classes.tolist())
    found.add(account_id, "restrictions", f"{account_id}/{model_id}", REJECT_SCREEN_EMPTIES_PRODUCT,
              f"the exclude screens of account {account_id} remove all {size} securities of product "
              f"{model_id} (asset class {where}), so its weight has nowhere to go; choose another "
              f"product, set the asset class weight to 0, or lift the screen")


# --------------------------------------------------------------------------
# Households.

def household_targets(targets: Targets, account_values: Any,
                      household_ids: Any) -> tuple[np.ndarray, sp.csr_matrix]:
    """The value-weighted blend of each household's account targets.

    For household h with usable accounts a and values v[a] (USD, clipped at 0):

        w[h,i] = Σ_a v[a] w[a,i] / Σ_a v[a]

    Where every usable account of h has value 0 (new, unfunded accounts) the
    blend is equal-weighted.  Rejected accounts take no part; a household with
    no usable account has an empty row.

    Parameters
    ----------
    targets
        From :func:`build_targets`.
    account_values
        Market value incl. cash of each account, USD, in ``targets.account_ids`` order.
    household_ids
        Household of each account, same order; a null (None) means the account
        is its own household, named by its account_id.

    Returns
    -------
    households : np.ndarray of str, shape (n_households,)
        Sorted household ids.
    weights : scipy.sparse.csr_matrix, shape (n_households, n_securities)
        Rows sum to 1 for households with a usable account.
    """
    n_accounts = len(targets.account_ids)
    values = np.asarray(account_values, dtype=float).reshape(-1)
    if isinstance(household_ids, (pa.Array, pa.ChunkedArray)):
        household_ids = household_ids.to_pylist()
    household_ids = np.asarray(household_ids, dtype=object).reshape(-1)
    if len(values) != n_accounts or len(household_ids) != n_accounts:
        raise ValueError(f"expected {n_accounts} account values and household ids (one per account of "
                         f"the targets), got {len(values)} and {len(household_ids)}")
    own = np.asarray([h is None for h in household_ids], dtype=bool)
    named = np.where(own, targets.account_ids, household_ids).astype(str)
    households, member_of = np.unique(named, return_inverse=True)
    usable = targets.usable.astype(float)
    values = np.where(np.isfinite(values), np.maximum(values, 0.0), 0.0) * usable
    total = np.bincount(member_of, weights=values, minlength=len(households))
    members = np.bincount(member_of, weights=usable, minlength=len(households))
    share = np.where(total[member_of] > 0, values / np.where(total > 0, total, 1.0)[member_of],
                     usable / np.maximum(members, 1.0)[member_of])
    blend = sp.csr_matrix((share, (member_of, np.arange(n_accounts))), shape=(len(households), n_accounts))
    weights = (blend @ targets.weights).tocsr()
    weights.eliminate_zeros()
    weights.sort_indices()
    return households, weights


__all__ = ["Targets", "build_targets", "restriction_matrix", "household_targets", "REJECT_SCREEN_EMPTIES_PRODUCT",
           "REJECT_CONFLICTING_ALLOCATION", "REJECT_UNKNOWN_PRODUCT", "EMPTY_PRODUCT_TOLERANCE"]
