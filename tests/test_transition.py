"""The transition plan: each year within the tax budget, the tracking error coming down, lots kept whole."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.book import synth
from engine.contract.config import Config, SolverConfig
from engine.contract.schema import Col
from engine.simulate.transition import plan_transition

ACCOUNT = "A0000009"


@pytest.fixture(scope="module")
def legacy_tables():
    """A taxable account with old, low-basis lots whose template moved from conservative to aggressive."""
    tables = synth.generate_tables(40, seed=11, bad_fraction=0.0)
    lots = tables["lots"]
    mine = pc.equal(lots.column(Col.account_id), ACCOUNT).to_numpy(zero_copy_only=False)
    basis = lots.column(Col.cost_basis).to_numpy().copy()
    basis[mine] *= 0.4
    i = lots.schema.get_field_index(Col.cost_basis)
    tables["lots"] = lots.set_column(i, lots.schema.field(i), pa.array(basis))
    accounts = tables["accounts"]
    template = np.asarray(accounts.column(Col.template_id).to_pylist(), dtype=object)
    template[np.asarray(accounts.column(Col.account_id).to_pylist(), dtype=object) == ACCOUNT] = "T15"
    i = accounts.schema.get_field_index(Col.template_id)
    tables["accounts"] = accounts.set_column(i, accounts.schema.field(i), pa.array(template, pa.string()))
    return tables


def test_a_transition_stays_within_its_yearly_budget_and_converges(legacy_tables):
    config = Config(solver=SolverConfig(eps_abs=1e-5, eps_rel=1e-5))
    budget = 4000.0
    plan = plan_transition(legacy_tables, synth.AS_OF, ACCOUNT, 3, config, tax_budget=budget)
    assert [y.year for y in plan] == [1, 2, 3]
    assert [y.date.year for y in plan] == [2026, 2027, 2028]
    for year in plan:
        assert year.tax <= budget + 1.0                       # rule 9, year by year
        assert year.tax > 0.5 * budget                        # the budget is what holds it back
        assert year.tracking_error_after < year.tracking_error_before
    # each year starts where the last one ended
    for last, this in zip(plan, plan[1:]):
        assert this.tracking_error_before == pytest.approx(last.tracking_error_after, rel=1e-6)


def test_without_a_budget_the_plan_is_on_target_in_a_year(legacy_tables):
    config = Config(solver=SolverConfig(eps_abs=1e-5, eps_rel=1e-5))
    budgeted = plan_transition(legacy_tables, synth.AS_OF, ACCOUNT, 1, config, tax_budget=4000.0)
    free = plan_transition(legacy_tables, synth.AS_OF, ACCOUNT, 1, config, tax_budget=1e12)
    assert free[0].tax > budgeted[0].tax
    assert free[0].tracking_error_after < budgeted[0].tracking_error_after
