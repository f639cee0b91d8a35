"""The blackboard reads only its own rows: O(K) bytes per report, whatever else is stored."""

from __future__ import annotations

import dataclasses
import importlib.util

import sqlalchemy as sa
from _models import digits_trainer

import optuna_mto
from optuna_mto._storage.optuna_internals import storage_of, study_id_of
from optuna_mto._storage.schema import BOARD_PREFIX_V1, BOARD_TABLE, FORMAT_KEY, FORMAT_VERSION


def _read_cost(study: optuna_mto.MTOStudy) -> tuple[list[str], int]:
    """The SQL statements one ``board.read()`` runs, and the bytes of the rows they return."""
    engine = study._board._engine
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        study._board.read()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    size = 0
    with engine.connect() as conn:
        for statement, parameters in statements:
            rows = conn.exec_driver_sql(statement, parameters).fetchall()
            size += sum(len(str(value)) for row in rows for value in row)
    return [s for s, _ in statements], size


def test_bytes_read_per_report_grow_neither_with_steps_nor_with_figures(
    storage_url: str, study_name: str, digits
) -> None:
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=3)
    study.optimize(digits_trainer(x, y, epochs=2), dashboard=False)
    statements, before = _read_cost(study)
    assert statements and all(BOARD_TABLE in s for s in statements)
    assert not any("study_system_attributes" in s or "trial" in s for s in statements)

    # Much more in the study: 60 more steps per split, and the dashboard's figures.
    for record in study.records().values():
        for step in range(2, 62):
            study._board.publish(dataclasses.replace(record, step=step, finished=False))
    storage, study_id = storage_of(study.study), study_id_of(study.study)
    for i in range(20):  # as big as optuna-dashboard's chunked figures, or bigger
        storage.set_study_system_attr(study_id, f"dashboard:chunk:{i}", "x" * 20_000)
    if importlib.util.find_spec("optuna_dashboard") is not None:
        from optuna_mto.visualization import refresh_dashboard

        refresh_dashboard(study, force=True)
    statements_after, after = _read_cost(study)
    assert statements_after == statements
    # The same K rows; only the step numbers' digits may differ.
    assert after <= before + 3 * 8, (before, after)
    assert before < 3 * 4_000  # K small records, not the study's 400 kB of attributes


def test_a_format_1_board_is_moved_into_the_table_once(
    storage_url: str, study_name: str, digits
) -> None:
    x, y = digits
    study = optuna_mto.create_study(study_name=study_name, storage=storage_url, n_splits=2)
    study.optimize(digits_trainer(x, y, epochs=1), dashboard=False)
    records = study.records()
    storage, study_id = storage_of(study.study), study_id_of(study.study)
    # Make it look as 0.1.0 left it: records in system attributes, no table rows.
    engine = study._board._engine
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {BOARD_TABLE} WHERE study_id = {study_id}")
    for split, record in records.items():
        storage.set_study_system_attr(study_id, f"{BOARD_PREFIX_V1}{split}", record.to_dict())
    storage.set_study_system_attr(study_id, FORMAT_KEY, 1)
    assert study.records() == {}

    loaded = optuna_mto.load_study(study_name=study_name, storage=storage_url)
    assert loaded.records() == records
    assert storage.get_study_system_attrs(study_id)[FORMAT_KEY] == FORMAT_VERSION
    # A newer row is never overwritten by the old attribute (a second upgrade is a no-op).
    newer = dataclasses.replace(records[0], step=99)
    loaded._board.publish(newer)
    storage.set_study_system_attr(study_id, FORMAT_KEY, 1)
    optuna_mto.load_study(study_name=study_name, storage=storage_url)
    assert loaded.records()[0].step == 99
