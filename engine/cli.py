"""The ``canopy`` command.

Each command is a thin layer over a library function: it parses options,
calls the function, and prints a summary with rich.  Errors Canopy raises on
purpose (:class:`~engine.contract.errors.CanopyError`) print as one clear line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import Callable

import typer
from rich.console import Console
from rich.table import Table

from engine.contract.errors import CanopyError
from engine.contract.schema import Col

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Canopy: tax-aware overlay portfolio management.")
bench = typer.Typer(no_args_is_help=True, help="Benchmarks for quants.")
app.add_typer(bench, name="bench")
console = Console()
errors = Console(stderr=True)


def _clean_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CanopyError as exc:
            errors.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
            raise typer.Exit(2) from None
    return wrapper


@app.command()
@_clean_errors
def generate(accounts: int = typer.Option(..., "--accounts", min=1, help="Number of accounts."),
             out: str = typer.Option(..., "--out", help="Folder or fsspec URI to write the book to."),
             seed: int = typer.Option(0, "--seed", help="Same seed, same book."),
             as_of: str = typer.Option("2026-11-20", "--as-of", help="The book's business date."),
             bad_fraction: float = typer.Option(0.002, "--bad-fraction", min=0.0, max=0.05,
                                                help="Share of accounts given each kind of planted bad row."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace a book already at --out.")):
    """Write a realistic synthetic book."""
    from engine.book import synth

    try:
        date = dt.date.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"--as-of must be a date like 2026-11-20, got {as_of!r}") from None
    start = time.perf_counter()
    rows = synth.generate(out, accounts, seed, date, bad_fraction=bad_fraction, overwrite=overwrite)
    console.print(f"book written to {out} in {time.perf_counter() - start:.1f} s")
    table = Table()
    table.add_column("book table")
    table.add_column("rows", justify="right")
    for name, count in rows.items():
        table.add_row(name, f"{count:,}")
    console.print(table)


@app.command()
@_clean_errors
def validate(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book."),
             examples: int = typer.Option(3, "--examples", min=0, help="Example messages per rule.")):
    """Read and validate a book; print its summary and its rejections."""
    import pyarrow.compute as pc

    from engine.book.storage import read_book

    start = time.perf_counter()
    result = read_book(book)
    elapsed = time.perf_counter() - start
    console.print(f"book {book} as of {result.as_of}, read and validated in {elapsed:.1f} s")
    summary = Table()
    summary.add_column("book table")
    summary.add_column("rows", justify="right")
    for name, table in result.tables.items():
        summary.add_row(name, f"{table.num_rows:,}")
    console.print(summary)
    accounts = result.accounts.num_rows
    rejected = len(result.rejected)
    console.print(f"{accounts - rejected:,} of {accounts:,} accounts usable; "
                  f"{rejected:,} rejected with {result.rejections.num_rows:,} rejection(s)")
    if result.rejections.num_rows:
        rules = Table(title="rejections by rule", expand=True)
        for column in (Col.rule, "count", "examples"):
            rules.add_column(column, overflow="fold")
        counts = result.rejections.group_by(Col.rule).aggregate([([], "count_all")]).sort_by(Col.rule)
        for rule, count in zip(counts.column(Col.rule).to_pylist(), counts.column("count_all").to_pylist()):
            same_rule = pc.equal(result.rejections.column(Col.rule), rule)
            first = result.rejections.filter(same_rule).slice(0, examples)
            rules.add_row(rule, f"{count:,}", "\n".join(
                f"{account}: {message}" for account, message in zip(
                    first.column(Col.account_id).to_pylist(), first.column(Col.message).to_pylist())))
        console.print(rules)


@app.command()
@_clean_errors
def run(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book."),
        out: str = typer.Option(..., "--out", help="Folder or fsspec URI of the runs (OUT/as_of=YYYY-MM-DD/)."),
        config: str = typer.Option(None, "--config", help="canopy.toml with [policy], [solver], [run]."),
        address: str = typer.Option(None, "--address",
                                    help="Ray cluster address (default: RAY_ADDRESS, else a local instance)."),
        replace: bool = typer.Option(False, "--replace", help="Replace a run already committed for the date."),
        storage_options: str = typer.Option(None, "--storage-options", help="fsspec options as JSON."),
        actors: int = typer.Option(None, "--actors", min=1, help="Solver actors (default: one per CPU or GPU)."),
        progress: bool = typer.Option(None, "--progress/--no-progress",
                                      help="Progress bar (default: when stderr is a terminal)."),
        executor: str = typer.Option("auto", "--executor",
                                     help="ray (solver actors), local (this process, no Ray: a GPU node), "
                                          "or auto (Ray where it is installed).")):
    """Run the nightly job: propose trades for every account of the book and commit the run."""
    import logging

    from engine.actors.nightly import choose_executor, executor_connection, print_summary, run_nightly
    from engine.book.storage import storage_options_from
    from engine.contract.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_config(config)
    options = storage_options_from(storage_options)
    executor = choose_executor(executor)
    with executor_connection(executor, address):
        manifest = run_nightly(book, out, settings, replace=replace, storage_options=options,
                               progress=progress, actors=actors, executor=executor)
    print_summary(manifest)


@app.command()
@_clean_errors
def warmup(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book (its shapes)."),
           config: str = typer.Option(None, "--config", help="The night's canopy.toml."),
           night: bool = typer.Option(True, "--night/--no-night", help="Compile the night's programs."),
           whatif: bool = typer.Option(True, "--whatif/--no-whatif", help="Compile the what-if's programs."),
           storage_options: str = typer.Option(None, "--storage-options", help="fsspec options as JSON.")):
    """Compile the solver's programs for the book's shapes into the persistent cache, ahead of the first
    night and the first what-if."""
    from engine.warmup import warm_up

    start = time.perf_counter()
    done = warm_up(book, config, whatif=whatif, night=night, storage_options=storage_options)
    if night:
        console.print(f"night: {len(done['night']['shapes'])} shapes, {done['night']['shards']} shards (one per "
                      f"shape and batch size) solved in {done['night']['seconds']:.1f} s: "
                      f"{', '.join(done['night']['shapes'])}")
    if whatif:
        console.print(f"what-if: {len(done['whatif'])} accounts, one per shape, in "
                      f"{sum(done['whatif'].values()):.1f} s")
    console.print(f"cache {done['cache']} warm in {time.perf_counter() - start:.1f} s")


@app.command("config")
def show_config():
    """Print every setting at its default, documented, as a canopy.toml to start from."""
    from engine.contract.config import default_toml

    typer.echo(default_toml(), nl=False)


def main() -> None:  # pragma: no cover - the console script
    app()


@app.command()
@_clean_errors
def check(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book."),
          run: str = typer.Option(..., "--run", help="Folder or URI the run was written under (OUT)."),
          show: int = typer.Option(50, "--show", min=0, help="Violations to print.")):
    """Check a committed run against its book, rule by rule (docs/contract.md §3); exit 1 on a violation."""
    from engine.book.runs import read_run
    from engine.book.storage import read_book
    from engine.review.check import check_run, violations_by_rule

    source = read_book(book)
    tables, manifest = read_run(run, source.as_of)
    violations = check_run(source.tables, source.as_of, tables, source.rejected)
    console.print(f"run {manifest['run_id']} for {source.as_of}: {tables['trades'].num_rows:,} trades, "
                  f"{tables['accounts'].num_rows:,} accounts, {violations.num_rows:,} violation(s)")
    for row in violations.slice(0, show).to_pylist():
        console.print(f"rule {row[Col.rule]}: account {row[Col.account_id]} {row[Col.key] or ''}: {row[Col.message]}",
                      highlight=False)
    if violations.num_rows:
        console.print(f"violations by rule: {violations_by_rule(violations)}")
        raise typer.Exit(1)


def _date_option(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option} must be a date like 2026-11-20, got {value!r}") from None


@app.command()
@_clean_errors
def backtest(history: list[str] = typer.Option(["sp500", "synthetic"], "--history",
                                              help="sp500 (skfolio's 20 stocks, 1991-2022) and/or synthetic."),
             stocks: int = typer.Option(500, "--stocks", min=2, help="Stocks of the synthetic universe."),
             years: int = typer.Option(3, "--years", min=1, help="Years of the synthetic history."),
             seed: int = typer.Option(0, "--seed", help="Seed of the synthetic history."),
             start: str = typer.Option(None, "--start", help="First day of the S&P 500 history."),
             end: str = typer.Option(None, "--end", help="Last day of the S&P 500 history."),
             window_years: int = typer.Option(10, "--window-years", min=0,
                                              help="S&P 500 history cut into fresh accounts of this many years (0: one)."),
             frequency: str = typer.Option("monthly", "--frequency", help="monthly, weekly or daily."),
             contribution: float = typer.Option(0.0, "--contribution", help="USD added each rebalance day."),
             tax_budget: float = typer.Option(None, "--tax-budget", help="Canopy's yearly tax budget, USD."),
             config: str = typer.Option(None, "--config", help="canopy.toml for Canopy's [policy] and [solver]."),
             out: str = typer.Option(None, "--out", help="Folder for the JSON and PNG (default: "
                                     "benchmarks/results/backtest; with --frontier, docs/results)."),
             frontier: bool = typer.Option(False, "--frontier",
                                           help="Sweep every strategy's settings: tax alpha against tracking error."),
             seeds: int = typer.Option(10, "--seeds", min=1, help="With --frontier: simulated universes (seeds)."),
             daily_seeds: int = typer.Option(1, "--daily-seeds", min=0,
                                             help="With --frontier: seeds that also run Canopy daily."),
             workers: int = typer.Option(2, "--workers", min=1, help="With --frontier: processes."),
             from_parts: bool = typer.Option(False, "--from-parts",
                                             help="With --frontier: report the histories already finished "
                                                  "in OUT/frontier_parts, running nothing.")):
    """Tax-alpha backtest: buy-and-hold, a monthly harvester and Canopy on real and simulated prices."""
    import logging
    from pathlib import Path

    from engine.contract.config import load_config
    from engine.simulate.backtest import BacktestSettings
    from engine.simulate.study import STEPS_PER_YEAR, run_study

    for name in history:
        if name not in ("sp500", "synthetic"):
            raise typer.BadParameter(f"--history must be sp500 or synthetic, got {name!r}")
    if frequency not in STEPS_PER_YEAR:
        raise typer.BadParameter(f"--frequency must be one of {', '.join(STEPS_PER_YEAR)}, got {frequency!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if frontier:
        from engine.simulate.frontier_study import FrontierStudy, print_frontier, run_frontier_study

        study = FrontierStudy(seeds=seeds, stocks=stocks, years=years, daily_seeds=daily_seeds,
                              real="sp500" in history, window_years=window_years, workers=workers)
        print_frontier(run_frontier_study(study, Path(out or "docs/results"),
                                          backtest=BacktestSettings(contribution=contribution),
                                          config=load_config(config), run=not from_parts))
        return
    run_study(history, stocks=stocks, years=years, seed=seed, start=_date_option(start, "--start"),
              end=_date_option(end, "--end"), window_years=window_years,
              settings=BacktestSettings(frequency=frequency, contribution=contribution),
              config=load_config(config), out=Path(out or "benchmarks/results/backtest"), tax_budget=tax_budget)


@app.command()
@_clean_errors
def approve(run: str = typer.Option(..., "--run", help="The runs folder (OUT) or one run (OUT/as_of=DATE)."),
            rules: str = typer.Option(..., "--rules", help="The rules file (TOML); see rules.toml."),
            as_of: str = typer.Option(None, "--as-of", help="The run's date (default: the latest committed)."),
            replace: bool = typer.Option(False, "--replace", help="Replace a decision set already committed."),
            storage_options: str = typer.Option(None, "--storage-options", help="fsspec options as JSON."),
            check_only: bool = typer.Option(False, "--check", help="Only parse and check the rules file.")):
    """Decide every account of a run by ordered rules; commit the decisions and the approved trade file."""
    from engine.book.storage import storage_options_from
    from engine.review.approval import approve as approve_run
    from engine.review.approval import load_rules

    parsed = load_rules(rules)
    if check_only:
        console.print(f"{rules}: {len(parsed.rules)} rule(s), default {parsed.default}: OK")
        return
    summary = approve_run(run, parsed, as_of=_date_option(as_of, "--as-of"), replace=replace,
                          storage_options=storage_options_from(storage_options))
    table = Table(title=f"decisions of run {summary['run_id']}")
    table.add_column(Col.rule)
    table.add_column(Col.decision)
    table.add_column("accounts", justify="right")
    decision_of = {r.name: r.decision for r in parsed.rules}
    for name, count in summary["by_rule"].items():
        table.add_row(name, decision_of.get(name, parsed.default), f"{count:,}")
    console.print(table)
    console.print(", ".join(f"{d}: {c:,}" for d, c in summary["by_decision"].items()))
    console.print(f"{summary['approved_trades']:,} approved trades worth ${summary['approved_value']:,.0f} "
                  f"written to {summary['folder']}/ (approved_trades.csv, approved_trades.parquet)")


@app.command()
@_clean_errors
def report(run: str = typer.Option(..., "--run", help="The runs folder (OUT) or one run (OUT/as_of=DATE)."),
           book: str = typer.Option(None, "--book", help="The run's book (default: the one its manifest names)."),
           out: str = typer.Option(None, "--out", help="Folder for the report (default: OUT/as_of=DATE/report)."),
           as_of: str = typer.Option(None, "--as-of", help="The run's date (default: the latest committed)."),
           max_accounts: int = typer.Option(500, "--max-accounts", min=0,
                                            help="Per-account pages at most (largest tax saved + deferred first)."),
           account: list[str] = typer.Option([], "--account", help="An account that gets a page in any case (repeat)."),
           replace: bool = typer.Option(False, "--replace", help="Replace a report already committed there."),
           storage_options: str = typer.Option(None, "--storage-options", help="fsspec options as JSON.")):
    """Write the run's HTML report with PNG charts, and a Taxes Saved or Deferred page per account."""
    from engine.book.storage import storage_options_from
    from engine.review.report import make_report

    written = make_report(run, book=book, out=out, as_of=_date_option(as_of, "--as-of"), replace=replace,
                          max_accounts=max_accounts, accounts=account,
                          storage_options=storage_options_from(storage_options))
    console.print(f"report written to {written['folder']}/index.html ({written['files']} files, "
                  f"{written['account_pages']} account pages"
                  f"{'' if written['book'] else '; no book, so no tax figures'})")


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise typer.BadParameter(f"{option} takes ASSET_CLASS=VALUE, got {value!r}")
        pairs.append((key, item))
    return pairs


@app.command()
@_clean_errors
def whatif(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book."),
           account: str = typer.Option(..., "--account", help="The account to ask about."),
           screen_tag: list[str] = typer.Option([], "--screen-tag", help="Add an exclude screen by tag (repeat)."),
           screen_security: list[str] = typer.Option([], "--screen-security",
                                                     help="Add an exclude screen of one security (repeat)."),
           lift_tag: list[str] = typer.Option([], "--lift-screen-tag", help="Lift an exclude screen by tag."),
           product: list[str] = typer.Option([], "--product", help="ASSET_CLASS=MODEL_ID: choose another product."),
           weight: list[str] = typer.Option([], "--weight",
                                            help="ASSET_CLASS=WEIGHT: a custom asset-class weight (0 removes it)."),
           withdrawal: float = typer.Option(0.0, "--withdrawal", min=0.0,
                                            help="USD to withdraw now, on top of any pending withdrawal."),
           config: str = typer.Option(None, "--config", help="canopy.toml (default: solver eps 1e-5)."),
           trades: int = typer.Option(10, "--trades", min=0, help="First trades to show in words."),
           json_out: str = typer.Option(None, "--json", help="Also write the answer as JSON here.")):
    """What if one account changed a screen, a product, its allocation, or withdrew cash?"""
    import json
    import os

    from engine.contract.config import Config, default_compilation_cache, load_config

    # as the nightly actors: compiled solver shapes are kept, so the next question of a shape
    # seen before loads it instead of compiling for 10-20 s (set before the solver is imported)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_compilation_cache())

    from engine.rebalance.customization import Allocation, CustomizationChange, Restriction
    from engine.simulate.whatif import WHATIF_SOLVER, WhatIfSession

    settings = load_config(config) if config else Config(solver=WHATIF_SOLVER)
    allocations = {}
    for asset_class, model in _pairs(product, "--product"):
        allocations[asset_class] = Allocation(asset_class, None, model)
    for asset_class, value in _pairs(weight, "--weight"):
        try:
            number = float(value)
        except ValueError:
            raise typer.BadParameter(f"--weight takes ASSET_CLASS=NUMBER, got {asset_class}={value}") from None
        model = allocations.get(asset_class, Allocation(asset_class)).model_id
        allocations[asset_class] = Allocation(asset_class, number, model)
    change = CustomizationChange(
        add_restrictions=tuple([Restriction("exclude", None, t) for t in screen_tag]
                               + [Restriction("exclude", s, None) for s in screen_security]),
        remove_restrictions=tuple(Restriction("exclude", None, t) for t in lift_tag),
        allocations=tuple(allocations.values()))
    start = time.perf_counter()
    session = WhatIfSession(book, settings, households_of=[account])
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    before = session.warm_up(account)
    warm = time.perf_counter() - start
    answer = session.whatif(account, change, withdrawal=withdrawal, first=trades)
    console.print(f"household read in {loaded:.1f} s; warm-up (tonight's proposal, compiles the solver) {warm:.1f} s; "
                  f"what-if {answer.seconds * 1000:.0f} ms{' (warm start)' if answer.warm_started else ''}")
    table = Table(title=f"account {account} (household {answer.household_id}): {answer.change}")
    table.add_column("")
    table.add_column("tonight, as is", justify="right")
    table.add_column("with the change", justify="right")

    def cell(result, name, style):
        value = result.numbers.get(name)
        if value is None:
            return "-"
        return {"usd": f"${value:,.0f}", "pct": f"{100 * value:.2f}%", "int": f"{value:,.0f}"}[style]

    rows = [("proposal status", None, None), ("market value", Col.value, "usd"), ("value sold", Col.sold, "usd"),
            ("share of the portfolio sold", "sold_fraction", "pct"), ("bought", Col.bought, "usd"),
            ("short-term gains realized", Col.realized_st, "usd"), ("long-term gains realized", Col.realized_lt, "usd"),
            ("estimated tax", Col.est_tax, "usd"), ("losses harvested", Col.harvested_loss, "usd"),
            ("tax saved by them", Col.tax_saved, "usd"),
            ("tracking error before", Col.tracking_error_before, "pct"),
            ("tracking error after", Col.tracking_error_after, "pct"), ("trades", Col.trade_count, "int")]
    for label, name, style in rows:
        if name is None:
            table.add_row(label, before.status, answer.status)
        else:
            table.add_row(label, cell(before, name, style), cell(answer, name, style))
    console.print(table)
    if answer.detail:
        console.print(f"detail: {answer.detail}", highlight=False)
    if answer.first_trades:
        console.print("first trades:")
        for sentence in answer.first_trades:
            console.print(f"  {sentence}", highlight=False)
    if json_out:
        with open(json_out, "w") as fh:
            json.dump({"as_is": before.to_dict(), "with_change": answer.to_dict()}, fh, indent=2, default=str)


@app.command()
@_clean_errors
def transition(book: str = typer.Option(..., "--book", help="Folder or fsspec URI of the book."),
               account: str = typer.Option(..., "--account", help="The account to transition."),
               years: int = typer.Option(5, "--years", min=1, help="Most years of the plan."),
               tax_budget: float = typer.Option(None, "--tax-budget",
                                                help="Yearly tax budget, USD (default: the account's)."),
               config: str = typer.Option(None, "--config", help="canopy.toml with [policy] and [solver]."),
               out: str = typer.Option(None, "--out", help="Folder for transition.json and .png "
                                                           "(default: transition-ACCOUNT).")):
    """A multi-year transition plan: tracking error and tax year by year, within a yearly tax budget."""
    import json
    from pathlib import Path

    from engine.book.storage import read_book
    from engine.contract.config import load_config
    from engine.contract.errors import BookError
    from engine.review.charts import transition_chart
    from engine.simulate.transition import plan_table, plan_transition

    settings = load_config(config)
    source = read_book(book, settings.policy, households_of=[account])
    if account in source.rejected:
        raise BookError(f"account {account} is rejected by validation; see canopy validate")
    plan = plan_transition(source.tables, source.as_of, account, years, settings, tax_budget=tax_budget)
    folder = Path(out or f"transition-{account}")
    folder.mkdir(parents=True, exist_ok=True)
    columns = plan_table(plan)
    budget = tax_budget if tax_budget is not None else next(
        r[Col.tax_budget] for r in source.accounts.to_pylist() if r[Col.account_id] == account)
    (folder / "transition.json").write_text(json.dumps(
        {"book": book, "account": account, "as_of": str(source.as_of), "yearly_tax_budget": budget,
         "assumptions": "prices held at the book's; tax paid from outside the account", "plan": columns},
        indent=1))
    import numpy as np

    transition_chart(np.asarray(columns["year"]), np.asarray(columns["tracking_error_after"]),
                     np.asarray(columns["tax"]), budget, folder / "transition.png",
                     f"transition of {account}: yearly tax budget "
                     + (f"USD {budget:,.0f}" if budget is not None else "none") + ", prices held",
                     start=columns["tracking_error_before"][0] if plan else None)
    table = Table(title=f"transition of {account} from {source.as_of} (prices held)")
    for name in ("year", "date", "TE before", "TE after", "tax", "gains ST", "gains LT", "traded"):
        table.add_column(name, justify="right", no_wrap=True)
    for y in plan:
        table.add_row(str(y.year), str(y.date), f"{y.tracking_error_before:.2%}", f"{y.tracking_error_after:.2%}",
                      f"{y.tax:,.0f}", f"{y.realized_short:,.0f}", f"{y.realized_long:,.0f}", f"{y.traded:,.0f}")
    console.print(table, width=max(console.width, 100))
    console.print(f"written: {folder / 'transition.json'}, {folder / 'transition.png'}", width=200)


@bench.command("solver")
def bench_solver(sizes: list[int] = typer.Option([50, 200, 500], "--size",
                                                help="Securities per instance; repeat for several."),
                 households: list[int] = typer.Option([1], "--accounts",
                                                      help="Accounts per household (1-4); repeat for several."),
                 batch: int = typer.Option(64, "--batch", min=1, help="Households Canopy solves."),
                 peer_households: int = typer.Option(8, "--peer-households", "--oracle-households", min=0,
                                                     help="Households each peer solves (bounds the run; 0: "
                                                          "Canopy alone, where cvxpy and OSQP are not "
                                                          "installed, as on a GPU node)."),
                 calibration: int = typer.Option(16, "--calibration", min=1,
                                                 help="Households of other instances OSQP's eps is tuned on."),
                 workers: int = typer.Option(None, "--workers", min=0,
                                             help="Processes, one per core (default: every core; 0: this one)."),
                 iterations: int = typer.Option(4000, "--iterations", min=1, help="SolverConfig.max_iterations."),
                 tolerance: float = typer.Option(1e-5, "--tolerance", min=0.0,
                                                 help="eps_abs = eps_rel (1e-5: within 1e-4 of Clarabel "
                                                      "for ipm; admm needs 1e-7)."),
                 method: str = typer.Option("ipm", "--method", help="ipm (interior point) or admm."),
                 dtype: str = typer.Option("float64", "--dtype", help="float64 or float32."),
                 device: str = typer.Option("cpu", "--device", help="JAX platform: cpu or gpu."),
                 out: str = typer.Option("benchmarks/results/solver.json", "--out", help="JSON written here.")):
    """Canopy against OSQP and cvxpy+Clarabel (parametrized and rebuilt) on the same instances, every
    system on every core: accounts/s, iterations, worst objective gap, ratio vs the best peer."""
    if dtype not in ("float64", "float32"):
        raise typer.BadParameter(f"--dtype must be float64 or float32, got {dtype!r}")
    if method not in ("ipm", "admm"):
        raise typer.BadParameter(f"--method must be ipm or admm, got {method!r}")
    from engine.actors.solver import ACTOR_ENV
    from engine.testing.solver_bench import main as bench_main

    bench_main(sizes=sizes, batch=batch, iterations=iterations, tolerance=tolerance, dtype=dtype, device=device,
               households=households, peer_households=peer_households, calibration=calibration,
               workers=workers, worker_env=ACTOR_ENV, out=out, method=method)



@app.command()
@_clean_errors
def portal(book: str = typer.Option(..., "--book", help="Folder or s3:// URI of the book (saves go inside it)."),
           runs: str = typer.Option(None, "--runs", help="The runs folder (canopy run --out), for status."),
           host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (loopback without --users)."),
           port: int = typer.Option(8000, "--port", min=1, max=65535),
           users: str = typer.Option(None, "--users", help="Users file (JSON; canopy portal-user writes it)."),
           storage_options: str = typer.Option(None, "--storage-options", help="fsspec options as JSON.")):
    """The advisor portal: customization with its tax and risk impact, new accounts, withdrawal requests."""
    import os

    from engine.book.storage import storage_options_from
    from engine.contract.config import default_compilation_cache

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_compilation_cache())
    from engine.portal.serve import serve

    serve(book, runs, host, port, users, storage_options_from(storage_options),
          say=lambda text: console.print(text, highlight=False))


@app.command("portal-user")
@_clean_errors
def portal_user(users: str = typer.Option(..., "--users", help="Users file to create or update."),
                name: str = typer.Option(..., "--name", help="The user's sign-in name."),
                role: str = typer.Option("advisor", "--role", help="advisor or rebalancing."),
                household: list[str] = typer.Option([], "--household", help="A household an advisor sees (repeat)."),
                password: str = typer.Option(..., "--password", prompt=True, hide_input=True,
                                             confirmation_prompt=True, help="Asked for when not given.")):
    """Add or replace a portal user; the password is kept as a salted scrypt hash."""
    from engine.portal.users import add_user

    add_user(users, name, password, role, household)
    console.print(f"{name} ({role}{', ' + ', '.join(household) if household else ''}) written to {users}")


if __name__ == "__main__":  # pragma: no cover - python -m engine.cli
    main()
