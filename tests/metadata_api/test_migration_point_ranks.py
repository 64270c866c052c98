"""Migration 0006: a rank's points become its own series; `<key>_rank<N>` keys written before it are split."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, text
from trainmon.metadata_api import migrations

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
KEYS_0005 = {"loss": 0.0, "loss_rank1": 1.0, "loss_rank12": 12.0, "solo_rank3": 3.0, "loss_rank01": 5.0}
BLOCKS = ("SELECT run_key, rank, key, block, first_step, last_step, count, min_value, max_value, nan_step, "
          "pos_inf_step, neg_inf_step FROM metric_blocks ORDER BY run_key, rank, key, block")


def _rows_0005(connection: Connection) -> None:
    """A run with rank 0's `loss`, the SDK's old `loss_rank1`/`loss_rank12`, and keys that only look suffixed."""
    connection.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', :t)"), {"t": NOW})
    connection.execute(text("INSERT INTO experiments (id, project_id, name, created_at) VALUES (1, 1, 'e', :t)"),
                       {"t": NOW})
    connection.execute(text("INSERT INTO runs (key, id, project_id, experiment_id, status, start_time, "
                            "last_heartbeat, params) VALUES (1, 'r', 1, 1, 'RUNNING', :t, :t, '{}')"), {"t": NOW})
    for key, offset in KEYS_0005.items():
        for step in range(0, 130, 3):
            special = 1 if (key, step) == ("loss_rank1", 66) else 0
            connection.execute(text("INSERT INTO metric_points (run_key, key, step, value, special, wall_time) "
                                    "VALUES (1, :k, :s, :v, :sp, :w)"),
                               {"k": key, "s": step, "v": None if special else offset + step, "sp": special,
                                "w": 1000.0 + step})


def test_0006_splits_rank_suffixed_keys_and_rebuilds_their_blocks(engine: Engine) -> None:
    migrations.upgrade(engine, "0005")
    with engine.begin() as connection:
        _rows_0005(connection)
        before_max_id = connection.execute(text("SELECT MAX(id) FROM metric_points")).scalar_one()
    migrations.upgrade(engine)
    with engine.connect() as connection:
        series = connection.execute(text("SELECT rank, key, COUNT(*), MIN(id) FROM metric_points "
                                         "GROUP BY rank, key ORDER BY rank, key")).all()
        assert [tuple(row[:3]) for row in series] == [(0, "loss", 44), (0, "loss_rank01", 44), (0, "solo_rank3", 44),
                                                      (1, "loss", 44), (12, "loss", 44)]
        assert connection.execute(text("SELECT MAX(id) FROM metric_points")).scalar_one() == before_max_id  # kept
        nan = connection.execute(text("SELECT step FROM metric_points WHERE special = 1")).all()
        assert [tuple(row) for row in nan] == [(66,)]
        blocks = [tuple(row) for row in connection.execute(text(BLOCKS))]
    rank1_loss = [block for block in blocks if block[1:3] == (1, "loss")]
    assert rank1_loss == [(1, 1, "loss", 0, 0, 63, 22, 1.0, 64.0, None, None, None),
                          (1, 1, "loss", 1, 66, 126, 21, 70.0, 127.0, 66, None, None),
                          (1, 1, "loss", 2, 129, 129, 1, 130.0, 130.0, None, None, None)]
    assert {block[1:3] for block in blocks} == {(0, "loss"), (0, "loss_rank01"), (0, "solo_rank3"), (1, "loss"),
                                                (12, "loss")}
    with engine.begin() as connection:  # a new point of rank 1 at a step rank 0 has: its own row, a new id
        new_id = connection.execute(text(
            "INSERT INTO metric_points (run_key, rank, key, step, value, special, wall_time) "
            "VALUES (1, 1, 'loss', 200, 1.0, 0, 1.0) RETURNING id")).scalar_one()
        assert new_id > before_max_id
        connection.execute(text("INSERT INTO metric_points (run_key, rank, key, step, value, special, wall_time) "
                                "VALUES (1, 0, 'loss', 200, 2.0, 0, 1.0)"))


def test_0006_downgrade_folds_ranks_back_into_suffixed_keys(engine: Engine) -> None:
    migrations.upgrade(engine, "0005")
    with engine.begin() as connection:
        _rows_0005(connection)
    migrations.upgrade(engine)
    migrations.downgrade(engine, "0005")
    with engine.connect() as connection:
        keys = connection.execute(text("SELECT key, COUNT(*) FROM metric_points GROUP BY key ORDER BY key")).all()
        assert dict(tuple(row) for row in keys) == dict.fromkeys(sorted(KEYS_0005), 44)
        block_keys = connection.execute(text("SELECT DISTINCT key FROM metric_blocks ORDER BY key")).scalars().all()
        assert block_keys == sorted(KEYS_0005)
