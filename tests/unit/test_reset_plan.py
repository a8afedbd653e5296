"""The decision of how to put a used database back into its template's state (pure logic)."""

from __future__ import annotations

from dataclasses import replace

from testlane.databases.reset import (
    CATALOG,
    DELETE_PAGES,
    ROWS_PER_FILE,
    TRUNCATE_FILE_COST,
    XID_LIMIT,
    Counters,
    ResetPlan,
    TableCounters,
    TemplateFacts,
    counters_query,
    hot_tables,
    plan_reset,
)

ORDERS, LINES, USERS, SEEDED, LOGGED = 100, 101, 102, 103, 104
ORDERS_SEQ, OTHER_SEQ = 200, 201

# orders <- lines (foreign key); countries (seeded) <- users; logged: an ALWAYS DELETE trigger (not restorable).
FACTS = TemplateFacts(
    names={
        ORDERS: "public.orders",
        LINES: "public.lines",
        USERS: "public.users",
        SEEDED: "public.countries",
        LOGGED: "public.logged",
    },
    empty=frozenset({ORDERS, LINES, USERS, LOGGED}),
    truncatable=frozenset({ORDERS, LINES, USERS, LOGGED}),
    restorable=frozenset({ORDERS, LINES, USERS}),
    referenced_by={ORDERS: frozenset({LINES}), SEEDED: frozenset({USERS}), LOGGED: frozenset({LINES})},
    sequence_state={ORDERS_SEQ: ("public.orders_id_seq", 1, False), OTHER_SEQ: ("public.other", 1, False)},
)


def counters(tables: dict[int, int] | None = None, sequences: dict[int, int] | None = None, **pages: int) -> Counters:
    """Counters with these tables' changes (and, by name, a table's pages: ``orders=12``)."""
    sizes = {ORDERS: pages.get("orders", 1), LINES: pages.get("lines", 1)}
    return Counters(
        {oid: TableCounters(n, pages=sizes.get(oid, 1)) for oid, n in (tables or {}).items()}, sequences or {}
    )


def test_nothing_changed_means_reuse_as_is() -> None:
    before = counters({CATALOG: 5, ORDERS: 0}, {ORDERS_SEQ: 3})
    assert plan_reset(FACTS, before, before) == ResetPlan()


def test_rows_in_an_empty_template_table_are_deleted_and_its_sequence_set_back() -> None:
    # No foreign-key closure: deleted as a replica, a referencing row would be a test's row in a written table.
    plan = plan_reset(FACTS, counters(), counters({ORDERS: 2}, {ORDERS_SEQ: 1}))
    assert plan == ResetPlan(empty=("public.orders",), setval=(("public.orders_id_seq", 1, False),))
    assert plan.statement() == (
        "SET LOCAL session_replication_role = replica; SET LOCAL row_security = off; "
        "DELETE FROM ONLY public.orders; SELECT setval('public.orders_id_seq', 1, False); DISCARD SEQUENCES"
    )


def test_an_empty_template_table_past_the_page_limit_is_truncated_with_its_referencing_tables() -> None:
    plan = plan_reset(FACTS, counters(), counters({ORDERS: 2}, orders=DELETE_PAGES + 1))
    assert plan == ResetPlan(truncate=("public.lines", "public.orders"))
    assert plan.statement() == "TRUNCATE public.lines, public.orders; DISCARD SEQUENCES"
    # At the limit, still a DELETE; a written referencing table within it is deleted, not truncated twice.
    assert plan_reset(FACTS, counters(), counters({ORDERS: 2, LINES: 1}, orders=DELETE_PAGES)) == ResetPlan(
        empty=("public.lines", "public.orders")
    )
    assert plan_reset(FACTS, counters(), counters({ORDERS: 2, LINES: 1}, orders=DELETE_PAGES + 1)) == ResetPlan(
        truncate=("public.lines", "public.orders")
    )


def test_a_vacuumed_or_analyzed_empty_template_table_is_truncated() -> None:
    # A VACUUM or ANALYZE wrote the table's size into pg_class (in place: no counter shows it); a DELETE
    # would leave it there, a TRUNCATE resets it to a fresh clone's.
    after = Counters({ORDERS: TableCounters(3, maintained=1, pages=1)})
    assert plan_reset(FACTS, counters(), after) == ResetPlan(truncate=("public.lines", "public.orders"))


def test_a_table_a_delete_would_fire_something_on_is_truncated() -> None:
    assert plan_reset(FACTS, counters(), counters({LOGGED: 1})) == ResetPlan(truncate=("public.lines", "public.logged"))


def test_an_empty_table_that_can_be_neither_deleted_nor_truncated_means_a_new_clone() -> None:
    facts = replace(FACTS, truncatable=FACTS.truncatable - {LOGGED})  # (a TRUNCATE trigger)
    assert plan_reset(facts, counters(), counters({LOGGED: 1})) is None
    facts = replace(FACTS, truncatable=FACTS.truncatable - {ORDERS})
    assert plan_reset(facts, counters(), counters({ORDERS: 1})) == ResetPlan(empty=("public.orders",))
    assert plan_reset(facts, counters(), counters({ORDERS: 1}, orders=DELETE_PAGES + 1)) is None


def test_truncates_that_replace_more_files_than_a_clone_is_worth_mean_a_new_clone() -> None:
    # orders and lines: 3 files each (heap, primary key, TOAST... as analyze counts them).
    facts = replace(FACTS, files={ORDERS: 3, LINES: 3})
    big = counters({ORDERS: 1}, orders=DELETE_PAGES + 1)
    assert plan_reset(replace(facts, template_files=6 * TRUNCATE_FILE_COST), counters(), big) is not None
    assert plan_reset(replace(facts, template_files=6 * TRUNCATE_FILE_COST - 1), counters(), big) is None
    # Deletes replace no file: whatever the fan-in, no clone.
    assert plan_reset(replace(facts, template_files=1), counters(), counters({ORDERS: 1})) == ResetPlan(
        empty=("public.orders",)
    )


def test_catalog_changes_mean_a_new_clone() -> None:
    assert plan_reset(FACTS, counters({CATALOG: 10}), counters({CATALOG: 11, ORDERS: 1})) is None


def test_rows_in_a_seeded_table_that_is_not_restorable_mean_a_new_clone() -> None:
    assert plan_reset(FACTS, counters(), counters({SEEDED: 1})) is None


def test_truncating_would_cascade_into_a_seeded_table() -> None:
    facts = replace(FACTS, referenced_by={ORDERS: frozenset({SEEDED})})
    assert plan_reset(facts, counters(), counters({ORDERS: 1}, orders=DELETE_PAGES + 1)) is None
    assert plan_reset(facts, counters(), counters({ORDERS: 1})) == ResetPlan(empty=("public.orders",))


def test_a_sequence_unknown_to_the_template_means_a_new_clone() -> None:
    assert plan_reset(FACTS, counters(), counters({}, {999: 1})) is None


def test_tables_unknown_to_the_template_are_covered_by_the_catalog_counter() -> None:
    # A table the test created itself shows up as an unknown oid; the DDL moved the catalog sum.
    assert plan_reset(FACTS, counters({CATALOG: 1}), counters({CATALOG: 9, 999: 4})) is None
    # Without a catalog change an unknown oid cannot be a new user table; it is ignored.
    assert plan_reset(FACTS, counters(), counters({999: 4})) == ResetPlan()


# -- seeded tables: the test's rows deleted by xmin --------------------------------------------------------
COUNTRIES_SEQ = 202
SEEDED_FACTS = replace(
    FACTS,
    restorable=FACTS.restorable | {SEEDED},
    sequence_state={
        COUNTRIES_SEQ: ("public.countries_id_seq", 250, True),
        OTHER_SEQ: ("public.other", 1, False),
        ORDERS_SEQ: ("public.orders_id_seq", 1, False),
    },
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
    rows = {oid: TableCounters(n, (rewritten or {}).get(oid, 0)) for oid, n in tables.items()}
    return Counters(rows, sequences or {}, database=1, next_xid=xid)


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


def test_updates_or_deletes_or_a_vacuum_of_a_seeded_table_mean_a_new_clone() -> None:
    assert plan_reset(SEEDED_FACTS, counters(), seeded({SEEDED: 3}, {SEEDED: 1})) is None
    vacuumed = Counters({SEEDED: TableCounters(3, maintained=1)}, database=1, next_xid=900)
    assert plan_reset(SEEDED_FACTS, counters(), vacuumed) is None


def test_a_seeded_table_with_a_delete_trigger_or_rule_means_a_new_clone() -> None:
    facts = replace(SEEDED_FACTS, restorable=FACTS.restorable)
    assert plan_reset(facts, counters(), seeded({SEEDED: 3})) is None


def test_seeded_and_empty_tables_together() -> None:
    plan = plan_reset(
        SEEDED_FACTS, counters(), seeded({SEEDED: 1, USERS: 1, ORDERS: 1, LOGGED: 1}, sequences={ORDERS_SEQ: 1})
    )
    assert plan == ResetPlan(
        truncate=("public.lines", "public.logged"),
        empty=("public.orders", "public.users"),
        delete=("public.countries",),
        setval=(("public.orders_id_seq", 1, False),),
        first_xid=700,
    )
    assert plan.statement() == (
        "TRUNCATE public.lines, public.logged; "
        "SET LOCAL session_replication_role = replica; SET LOCAL row_security = off; "
        "DELETE FROM ONLY public.orders; DELETE FROM ONLY public.users; "
        "DELETE FROM ONLY public.countries WHERE age(xmin) <= age('700'::xid); "
        "SELECT setval('public.orders_id_seq', 1, False); DISCARD SEQUENCES"
    )


def test_a_test_that_added_more_seeded_rows_than_a_clone_is_worth_gets_a_new_clone() -> None:
    facts = replace(SEEDED_FACTS, template_files=10)
    many = Counters({SEEDED: TableCounters(3, live=10 * ROWS_PER_FILE)}, database=1, next_xid=900)
    assert plan_reset(facts, counters(), many) is not None
    more = Counters({SEEDED: TableCounters(3, live=10 * ROWS_PER_FILE + 1)}, database=1, next_xid=900)
    assert plan_reset(facts, counters(), more) is None


def test_without_a_known_horizon_or_past_2_to_the_31_xids_seeded_rows_cannot_be_told_apart() -> None:
    facts = replace(SEEDED_FACTS, first_clone_xid=None)
    assert plan_reset(facts, counters(), seeded({SEEDED: 1})) is None
    assert plan_reset(SEEDED_FACTS, counters(), seeded({SEEDED: 1}, xid=XID_LIMIT)) is None
    # (rows of tables empty in the template need no horizon: every row is the test's)
    assert plan_reset(facts, counters(), seeded({ORDERS: 1}, xid=XID_LIMIT)) == ResetPlan(empty=("public.orders",))


def test_a_used_sequence_of_an_untouched_table_is_set_back() -> None:
    plan = plan_reset(SEEDED_FACTS, counters(), seeded({}, sequences={OTHER_SEQ: 1}))
    assert plan == ResetPlan(setval=(("public.other", 1, False),), first_xid=700)


def test_counters_going_backwards_mean_a_new_clone() -> None:
    before = seeded({SEEDED: 5}, sequences={COUNTRIES_SEQ: 3})
    assert plan_reset(SEEDED_FACTS, before, seeded({SEEDED: 0}, sequences={COUNTRIES_SEQ: 3})) is None
    reset_stats = Counters(before.tables, before.sequences, database=1, next_xid=900, stats_reset="2026-01-01")
    assert plan_reset(SEEDED_FACTS, before, reset_stats) is None


def test_the_tests_rows_are_looked_for_from_the_templates_last_page_as_many_as_it_added() -> None:
    before = Counters({SEEDED: TableCounters(10, live=2)}, database=1, next_xid=800)
    after = Counters({SEEDED: TableCounters(13, live=5)}, database=4, next_xid=900)
    plan = plan_reset(SEEDED_FACTS, before, after)
    assert plan is not None and plan.ranged == (("public.countries", 39, 3),)


def test_a_full_read_and_a_targeted_read_come_from_one_builder() -> None:
    full = counters_query(Counters(database=5, sequence_sum=7))
    assert "IS DISTINCT FROM 5::bigint" in full and "IS DISTINCT FROM 7::bigint" in full and "seq_sum" in full
    targeted = counters_query(only=(ORDERS, ORDERS_SEQ), catalog=False)
    assert "c.oid IN (100, 200)" in targeted and "seq_sum" not in targeted and "'c'" not in targeted
    assert "'c'" in counters_query(only=(ORDERS,), catalog=True)


def test_with_the_templates_facts_a_read_names_relations_by_oid_and_reads_the_written_tables_first() -> None:
    facts = replace(FACTS, catalog=(1259, 2608))
    baseline = Counters({ORDERS: TableCounters(4), CATALOG: TableCounters(50)}, database=90, sequence_sum=7)
    # The tables tests wrote and those the baseline counted: read first while they are fewer than half.
    hot = hot_tables(baseline, facts, written=(LINES,))
    assert hot == {ORDERS, LINES}
    query = counters_query(baseline, facts=facts, hot=hot)
    assert "pg_class" not in query  # no scan that grows with the schema
    assert "unnest('{100,101}'::oid[])" in query and "unnest('{102,103,104}'::oid[])" in query
    assert "unnest('{1259,2608}'::oid[])" in query and "unnest('{200,201}'::oid[])" in query
    # The others are read when the database's move is not the written tables' (4 counted) and the catalog's.
    assert "(SELECT total FROM db) - 90 <> coalesce((SELECT sum(n) FROM hot), 0) - 4" in query
    assert "- 50" in query
    # Every table at once: without facts, a new clone's baseline, or when the hot tables are half of them.
    assert hot_tables(baseline, None) is None
    assert hot_tables(Counters(), facts) is None
    assert hot_tables(baseline, facts, written=(LINES, USERS)) is None
    assert "pg_class" not in counters_query(Counters(), facts=facts)
