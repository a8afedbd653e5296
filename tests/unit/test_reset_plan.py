"""The decision of how to put a used database back into its template's state (pure logic)."""

from __future__ import annotations

from testlane.databases.reset import CATALOG, XID_LIMIT, Counters, ResetPlan, TemplateFacts, plan_reset

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
    assert plan_reset(FACTS, before, before) == ResetPlan()


def test_rows_in_an_empty_template_table_are_truncated() -> None:
    after = counters({ORDERS: 2}, {ORDERS_SEQ: 1})
    plan = plan_reset(FACTS, counters(), after)
    assert plan == ResetPlan(truncate=("public.lines", "public.orders"))  # with its referencing table


def test_a_referencing_table_alone_is_truncated_alone() -> None:
    assert plan_reset(FACTS, counters(), counters({LINES: 1})) == ResetPlan(truncate=("public.lines",))


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
    assert plan_reset(FACTS, counters(), counters({999: 4})) == ResetPlan()


# -- seeded tables: the test's rows deleted by xmin --------------------------------------------------------
COUNTRIES_SEQ = 202
SEEDED_FACTS = TemplateFacts(
    truncatable=FACTS.truncatable,
    names=FACTS.names,
    catalog=FACTS.catalog,
    referenced_by=FACTS.referenced_by,
    sequence_owner={ORDERS_SEQ: ORDERS, COUNTRIES_SEQ: SEEDED},
    restorable=frozenset({SEEDED}),
    sequence_state={COUNTRIES_SEQ: ("public.countries_id_seq", 250, True), OTHER_SEQ: ("public.other", 1, False)},
    first_clone_xid=700,
    pages={SEEDED: 40},
)


def seeded(
    tables: dict[int, int],
    rewritten: dict[int, int] | None = None,
    sequences: dict[int, int] | None = None,
    xid: int = 900,
) -> Counters:
    """Counters as read after a test (the database's sum and the next xid known)."""
    return Counters(tables, sequences or {}, rewritten or {}, database=1, next_xid=xid)


def test_inserts_into_a_seeded_table_delete_the_tests_rows_and_set_its_sequence_back() -> None:
    after = seeded({SEEDED: 3}, sequences={COUNTRIES_SEQ: 2})
    plan = plan_reset(SEEDED_FACTS, counters(), after)
    assert plan == ResetPlan(
        delete=("public.countries",), setval=(("public.countries_id_seq", 250, True),), first_xid=700
    )
    # After a reset, the baseline's own next xid is the horizon (newer than the template's).
    assert plan_reset(SEEDED_FACTS, seeded({}, xid=800), after) == ResetPlan(
        delete=("public.countries",), setval=(("public.countries_id_seq", 250, True),), first_xid=800
    )


def test_updates_or_deletes_of_a_seeded_table_mean_a_new_clone() -> None:
    assert plan_reset(SEEDED_FACTS, counters(), seeded({SEEDED: 3}, {SEEDED: 1})) is None


def test_a_seeded_table_with_a_delete_trigger_or_rule_means_a_new_clone() -> None:
    facts = TemplateFacts(**{**SEEDED_FACTS.__dict__, "restorable": frozenset()})
    assert plan_reset(facts, counters(), seeded({SEEDED: 3})) is None


def test_seeded_and_empty_tables_together() -> None:
    plan = plan_reset(SEEDED_FACTS, counters(), seeded({SEEDED: 1, USERS: 1, ORDERS: 1}, sequences={ORDERS_SEQ: 1}))
    assert plan == ResetPlan(
        truncate=("public.lines", "public.orders", "public.users"), delete=("public.countries",), first_xid=700
    )


def test_without_a_known_horizon_or_past_2_to_the_31_xids_seeded_rows_cannot_be_told_apart() -> None:
    facts = TemplateFacts(**{**SEEDED_FACTS.__dict__, "first_clone_xid": None})
    assert plan_reset(facts, counters(), seeded({SEEDED: 1})) is None
    assert plan_reset(SEEDED_FACTS, counters(), seeded({SEEDED: 1}, xid=XID_LIMIT)) is None


def test_a_used_sequence_of_an_untouched_table_is_set_back() -> None:
    plan = plan_reset(SEEDED_FACTS, counters(), seeded({}, sequences={OTHER_SEQ: 1}))
    assert plan == ResetPlan(setval=(("public.other", 1, False),), first_xid=700)


def test_counters_going_backwards_mean_a_new_clone() -> None:
    before = seeded({SEEDED: 5}, sequences={COUNTRIES_SEQ: 3})
    assert plan_reset(SEEDED_FACTS, before, seeded({SEEDED: 0}, sequences={COUNTRIES_SEQ: 3})) is None
    reset_stats = Counters(before.tables, before.sequences, database=1, next_xid=900, stats_reset="2026-01-01")
    assert plan_reset(SEEDED_FACTS, before, reset_stats) is None


def test_the_tests_rows_are_looked_for_from_the_templates_last_page_as_many_as_it_added() -> None:
    before = Counters({SEEDED: 10}, live={SEEDED: 2}, database=1, next_xid=800)
    after = Counters({SEEDED: 13}, live={SEEDED: 5}, database=4, next_xid=900)
    plan = plan_reset(SEEDED_FACTS, before, after)
    assert plan is not None and plan.ranged == (("public.countries", 39, 3),)
