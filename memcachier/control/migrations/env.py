"""
Alembic's entry point: migrate the connection that
L{memcachier.control.migrations.upgrade} put in the configuration.
"""

from alembic import context


def runMigrations():
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "memcachier migrations run on a connection; "
            "use memcachier.control.migrations.upgrade(engine)"
        )
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("memcachier migrations do not support offline (SQL script) mode")
runMigrations()
