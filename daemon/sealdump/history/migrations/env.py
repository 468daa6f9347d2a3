"""Alembic environment: migrations run on the connection sealdump opened."""

from alembic import context

from sealdump.history.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copy; batch mode does that for us
)
with context.begin_transaction():
    context.run_migrations()
