"""Results storage for the batch path: SQLAlchemy 2 models, sessions, Alembic migrations and reports.

Nothing here connects or reads settings at import; `db.session.get_engine(url)` builds the engine on first use.
"""
