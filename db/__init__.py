"""Results storage for the batch path: SQLAlchemy 2 models, sessions, Alembic migrations and reports.

Nothing here connects at import; `db.session.get_engine()` builds the engine on first use.
"""
