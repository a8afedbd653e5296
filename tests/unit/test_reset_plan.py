"""The decision of how to put a used database back into its template's state (pure logic)."""

from __future__ import annotations

from testlane.databases.reset import CATALOG, Counters, TemplateFacts, plan_reset

ORDERS, LINES, USERS, SEEDED = 100, 101, 102, 103
ORDERS_SEQ, OTHER_SEQ = 200, 201

FACTS = TemplateFacts(
    truncatable=frozenset({ORDERS, LINES, USERS}),
    names={ORDERS: "public.orders", LINES: "public.lines", USERS: "public.users", SEEDED: "public.countries"},
    catalog=frozenset({CATALOG}),
    referenced_by={ORDERS: frozenset({LINES}), SEEDED: frozenset({USERS})},
    sequence_owner={ORDERS_SEQ: ORDERS},
)


def counters(tables: dict[int, int] | None = None, sequences: dict[int, int] | None = None) -> Counters:
    return Counters(tables or {}, sequences or {})


def test_nothing_changed_means_reuse_as_is() -> None:
    before = counters({CATALOG: 5, ORDERS: 0}, {ORDERS_SEQ: 3})
    assert plan_reset(FACTS, before, before) == []


def test_rows_in_an_empty_template_table_are_truncated() -> None:
    after = counters({ORDERS: 2}, {ORDERS_SEQ: 1})
    assert plan_reset(FACTS, counters(), after) == ["public.lines", "public.orders"]  # with its referencing table


def test_a_referencing_table_alone_is_truncated_alone() -> None:
    assert plan_reset(FACTS, counters(), counters({LINES: 1})) == ["public.lines"]


def test_catalog_changes_mean_a_new_clone() -> None:
    assert plan_reset(FACTS, counters({CATALOG: 10}), counters({CATALOG: 11, ORDERS: 1})) is None


def test_rows_in_a_seeded_table_mean_a_new_clone() -> None:
    assert plan_reset(FACTS, counters(), counters({SEEDED: 1})) is None


def test_truncating_would_cascade_into_a_seeded_table() -> None:
    facts = TemplateFacts(
        FACTS.truncatable, FACTS.names, FACTS.catalog, {ORDERS: frozenset({SEEDED})}, FACTS.sequence_owner
    )
    assert plan_reset(facts, counters(), counters({ORDERS: 1})) is None


def test_a_sequence_not_owned_by_a_truncated_table_means_a_new_clone() -> None:
    assert plan_reset(FACTS, counters(), counters({}, {OTHER_SEQ: 1})) is None
    assert plan_reset(FACTS, counters(), counters({USERS: 1}, {ORDERS_SEQ: 1})) is None


def test_tables_unknown_to_the_template_are_covered_by_the_catalog_counter() -> None:
    # A table the test created itself shows up as an unknown oid; the DDL moved the catalog sum.
    assert plan_reset(FACTS, counters({CATALOG: 1}), counters({CATALOG: 9, 999: 4})) is None
    # Without a catalog change an unknown oid cannot be a new user table; it is ignored.
    assert plan_reset(FACTS, counters(), counters({999: 4})) == []
