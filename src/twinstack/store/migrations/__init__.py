"""Alembic migrations of the store; run them with `Database.migrate()`, not by importing."""
