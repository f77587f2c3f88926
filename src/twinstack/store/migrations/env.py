"""Alembic environment.

`Database.migrate()` passes its open connection in `config.attributes["connection"]`, so no
alembic.ini is needed. Run by the `alembic` command instead, it uses `sqlalchemy.url`.
"""

from alembic import context
from sqlalchemy import Connection

from twinstack.store.db import Database
from twinstack.store.models import Base


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite lacks ALTER
    with context.begin_transaction():
        context.run_migrations()


config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run(given)
else:
    database = Database(config.get_main_option("sqlalchemy.url") or "")
    try:
        with database.engine.begin() as connection:
            run(connection)
    finally:
        database.dispose()
