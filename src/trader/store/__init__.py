"""Persistence: the SQLAlchemy schema, its Alembic migrations and the engine/session helpers."""
