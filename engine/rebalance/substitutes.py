"""Substitutes: what an account may buy, besides its targets, when it cannot buy a target.

A shard's universe is the securities its accounts hold or target; nothing else can be
bought.  So an account that may not buy its S&P 500 ETF (``never_buy``, ``exclude``), or
that sells it at a loss today (the wash-sale rule then blocks its wash group for 30 days),
could only hold cash or overweight other classes.  A **substitute** is a security with
target weight 0 that the account may buy; the risk model decides how much of it to hold,
through the tracking error ``(w − w*)ᵀ (X F Xᵀ + D) (w − w*)`` to the unchanged target,
with the normal trading costs: a close substitute (the same index, another wash group)
replaces the blocked target nearly one for one, a loose one in part.

Candidates (:func:`candidates`, built with the targets):

* the securities of the products the account's template lists for an asset class it
  holds (``templates.model_id`` and ``alternatives``), its own product left out, where its
  own product and the listed one are each of at most
  ``PolicyConfig.substitute_max_securities`` securities (a direct index is not a stand-in:
  an account that wants it chooses it as its product; and in a direct index the index's
  other names, already targets, stand in for a name the account cannot buy);
* the securities the book's optional ``substitutes`` table (contract version 2) names
  for a security of the account's products;
* never one the account targets, may not buy (``never_buy``, ``exclude``: blocked exactly
  as before) or that has no price.  Wash-sale blocks apply in problem assembly as to any
  security, so a substitute in the harvested security's wash group is not bought today.

Each candidate is tagged with the asset class it stands in for.  It enters a shard's
universe only where the account needs it (:func:`usable`): a security it targets in that
class is covered by ``never_buy`` or ``exclude``, or its household holds a lot at a loss of
that wash group in a taxable account that harvests, or sold that group at a loss in its
recent trades.  So a book whose targets can all be bought solves as before, and the
universe grows only by substitutes some account can use.  A substitute the account holds
is in the universe anyway (held), so once the restriction or the window ends the risk
model sells it back into the target where the tax allows.

Pure: Arrow tables in, SciPy sparse matrices out; no storage, no ray.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from engine.contract.arrow import index_in, numbers, strings
from engine.contract.schema import Col, Side, TaxStatus

__all__ = ["candidates", "substitute_relation", "restricted_classes", "usable"]


def substitute_relation(substitutes: pa.Table | None, security_ids: np.ndarray) -> sp.csr_matrix:
    """``R[i, j] = 1`` where the book's ``substitutes`` table names ``j`` a substitute of ``i``.

    Shape (S, S) over ``security_ids``; rows naming unknown securities are left out
    (validation refuses them).
    """
    n = len(security_ids)
    if substitutes is None or substitutes.num_rows == 0:
        return sp.csr_matrix((n, n))
    first = index_in(substitutes.column(Col.security_id), security_ids)
    second = index_in(substitutes.column(Col.substitute_id), security_ids)
    keep = (first >= 0) & (second >= 0) & (first != second)
    relation = sp.csr_matrix((np.ones(int(keep.sum())), (first[keep], second[keep])), shape=(n, n))
    relation.data[:] = 1.0
    return relation


def _listed_products(templates: pa.Table, template_ids: np.ndarray, asset_classes: np.ndarray,
                     model_ids: np.ndarray) -> sp.csr_matrix:
    """``T[t·C + c, m] = 1`` where template t lists product m for asset class c (default or alternative)."""
    n_classes = len(asset_classes)
    row = index_in(templates.column(Col.template_id), template_ids) * n_classes \
        + index_in(templates.column(Col.asset_class), asset_classes)
    alternatives = templates.column(Col.alternatives)
    parents = np.asarray(pc.list_parent_indices(alternatives).to_numpy(zero_copy_only=False), dtype=np.int64)
    rows = np.r_[row, row[parents]]
    models = np.r_[index_in(templates.column(Col.model_id), model_ids),
                   index_in(pc.list_flatten(alternatives), model_ids)]
    keep = models >= 0
    listed = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], models[keep])),
                           shape=(len(template_ids) * n_classes, len(model_ids)))
    listed.data[:] = 1.0
    return listed


def candidates(tables: Mapping[str, pa.Table], template_of: np.ndarray, class_model: np.ndarray, held: np.ndarray,
               model_weights: sp.csr_matrix, axes: Any, blocked: sp.csr_matrix, max_securities: int,
               unpriced: np.ndarray | None = None) -> sp.csr_matrix:
    """The substitutes each account may buy, tagged with the asset class each stands in for.

    Parameters
    ----------
    tables
        The conformed ``templates`` and ``securities`` tables, and ``substitutes`` where the
        book has one.
    template_of : (A,) int64
        Each account's template (row of ``axes.template_ids``; -1 for none).
    class_model : (A, C) int64
        The product of each of the account's asset classes (row of ``axes.model_ids``; -1 none).
    held : (A, C) bool
        The asset classes of positive weight.
    model_weights : (M, S) csr_matrix
        The models' weights.
    axes
        The build's labels (``account_ids``, ``security_ids``, ``asset_classes``,
        ``template_ids``, ``model_ids``).
    blocked : (A, S) csr_matrix
        1 where the account may not buy the security (``never_buy`` or ``exclude``).
    max_securities
        A listed product of more securities is no substitute, and an asset class whose own
        product has more takes none from its template.
    unpriced : (S,) bool, optional
        Securities without a usable price on the business date (missing or stale): none is a
        substitute, nor is one whose price is not a positive number.

    Returns
    -------
    scipy.sparse.csr_matrix, (A, S)
        ``class + 1`` of the asset class (row of ``axes.asset_classes``) a candidate stands
        in for; targeted securities are not yet removed (the caller knows the weights).
    """
    n_accounts, n_classes, n_securities = len(axes.account_ids), len(axes.asset_classes), len(axes.security_ids)
    slot_account, slot_class = np.nonzero(held & (template_of >= 0)[:, None] & (class_model >= 0))
    own = class_model[slot_account, slot_class]
    pick = sp.csr_matrix((np.ones(slot_account.size), (np.arange(slot_account.size), own)),
                         shape=(slot_account.size, len(axes.model_ids)))
    listed = _listed_products(tables["templates"], axes.template_ids, axes.asset_classes, axes.model_ids)
    small = (np.diff(model_weights.indptr) <= max_securities).astype(float)
    others = listed[template_of[slot_account] * n_classes + slot_class] - pick        # the account's own left out
    others.data = np.maximum(others.data, 0.0)
    others = sp.diags(small[own]) @ others      # a direct index: its other names stand in for one it cannot buy
    found = (others @ sp.diags(small) @ model_weights).tocsr()
    relation = substitute_relation(tables.get("substitutes"), axes.security_ids)
    if relation.nnz:
        found = found + ((pick @ model_weights) @ relation).tocsr()
    found = found.tocoo()
    keep = found.data > 0
    price = numbers(tables["securities"], Col.price, fill=np.nan, dtype=float)
    keep &= np.isfinite(price[found.col]) & (price[found.col] > 0)
    if unpriced is not None:
        keep &= ~unpriced[found.col]
    account, security, tag = slot_account[found.row[keep]], found.col[keep], slot_class[found.row[keep]] + 1.0
    # two classes of one account naming one security: it stands in for the first (a sum would mix the tags)
    _, first = np.unique(account.astype(np.int64) * max(n_securities, 1) + security, return_index=True)
    tagged = sp.csr_matrix((tag[first], (account[first], security[first])), shape=(n_accounts, n_securities))
    if blocked.nnz:
        tagged = tagged - tagged.multiply(blocked > 0)
        tagged.eliminate_zeros()
    return tagged.tocsr()


def restricted_classes(weights: sp.csr_matrix, blocked: sp.csr_matrix, security_classes: np.ndarray,
                       n_classes: int) -> np.ndarray:
    """(A, C) bool: the account targets a security of the class that it may not buy."""
    out = np.zeros((weights.shape[0], n_classes), bool)
    if not blocked.nnz:
        return out
    hit = weights.multiply(blocked > 0).tocoo()
    hit_rows, hit_cols = hit.row[hit.data > 0], hit.col[hit.data > 0]
    out[hit_rows, security_classes[hit_cols]] = True
    return out


def usable(tables: Mapping[str, pa.Table], targets: Any, account_ids: np.ndarray, member: np.ndarray
           ) -> sp.csr_matrix:
    """The substitutes each of ``account_ids`` can use today: (A, len(targets.security_ids)), 1 where.

    A candidate (``targets.substitutes``) is usable where its account needs a substitute for
    its asset class: ``targets.restricted_classes``, or its household (``member``, a code per
    account) holds a loss lot of a wash group it targets in a taxable account that harvests,
    or sold such a group at a loss in its recent ``transactions``.  Computed per account from
    the account's own rows, so planning (the whole book) and assembly (a shard) agree.
    """
    account_ids = np.asarray(account_ids, dtype=object)
    rows = index_in(account_ids, targets.account_ids)
    subs = targets.substitutes[rows].tocoo()
    if subs.nnz == 0:
        return sp.csr_matrix((account_ids.size, len(targets.security_ids)))
    need = targets.restricted_classes[rows].copy()
    losing = _losing_classes(tables, targets, account_ids, rows)
    households = np.unique(member)
    in_household = np.zeros((households.size, need.shape[1]), bool)
    code = np.searchsorted(households, member)
    np.logical_or.at(in_household, code, losing)
    need |= in_household[code]
    keep = need[subs.row, subs.data.astype(np.int64) - 1]
    return sp.csr_matrix((np.ones(int(keep.sum())), (subs.row[keep], subs.col[keep])), shape=subs.shape)


def _losing_classes(tables: Mapping[str, pa.Table], targets: Any, account_ids: np.ndarray, rows: np.ndarray
                    ) -> np.ndarray:
    """(A, C) bool: the account harvests a loss lot of, or sold at a loss, a wash group it targets, by class."""
    securities = tables["securities"]
    table_ids = strings(securities, Col.security_id)
    groups = np.asarray(pc.coalesce(securities.column(Col.wash_group), securities.column(Col.security_id))
                        .to_pylist(), dtype=object).astype(str)
    group_names, group_code = np.unique(groups, return_inverse=True)
    target_table_row = index_in(targets.security_ids, table_ids)
    weights = targets.weights[rows].tocoo()
    G = max(group_names.size, 1)
    targeted = np.unique(weights.row.astype(np.int64) * G + group_code[target_table_row[weights.col]])
    class_of = index_in(securities.column(Col.asset_class), targets.asset_classes)
    out = np.zeros((account_ids.size, len(targets.asset_classes)), bool)

    accounts = tables["accounts"]
    account_row = index_in(account_ids, accounts.column(Col.account_id).combine_chunks())
    harvests = ((strings(accounts, Col.tax_status)[account_row] == TaxStatus.taxable)
                & numbers(accounts, Col.harvest, fill=None).astype(bool)[account_row])
    lots = tables["lots"]
    lot_account = index_in(lots.column(Col.account_id), account_ids)
    lot_security = index_in(lots.column(Col.security_id), table_ids)
    price = numbers(securities, Col.price, fill=np.nan, dtype=float)
    loss = (lot_account >= 0) & (lot_security >= 0)
    loss[loss] &= harvests[lot_account[loss]]
    loss[loss] &= (numbers(lots, Col.quantity)[loss] * price[lot_security[loss]] < numbers(lots, Col.cost_basis)[loss])
    _mark(out, targeted, lot_account[loss], lot_security[loss], group_code, class_of, G)

    trades = tables.get("transactions")
    if trades is not None and trades.num_rows:
        t_account = index_in(trades.column(Col.account_id), account_ids)
        t_security = index_in(trades.column(Col.security_id), table_ids)
        sold = ((t_account >= 0) & (t_security >= 0) & (strings(trades, Col.side) == Side.sell)
                & (numbers(trades, Col.realized_gain, fill=0.0) < 0))
        _mark(out, targeted, t_account[sold], t_security[sold], group_code, class_of, G)
    return out


def _mark(out: np.ndarray, targeted: np.ndarray, account: np.ndarray, security: np.ndarray,
          group_code: np.ndarray, class_of: np.ndarray, n_groups: int) -> None:
    """Set ``out[a, class]`` for each (account, security) whose wash group the account targets, in place."""
    if account.size == 0 or targeted.size == 0:
        return
    key = account.astype(np.int64) * n_groups + group_code[security]
    where = np.searchsorted(targeted, key)
    hit = (where < targeted.size) & (targeted[np.minimum(where, targeted.size - 1)] == key)
    out[account[hit], class_of[security[hit]]] = True
