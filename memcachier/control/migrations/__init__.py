# -*- test-case-name: tests.unit.test_control -*-
"""
Alembic migrations of the control plane, shipped inside the package so that
they work from an installed wheel.

There is no C{alembic.ini}: L{alembicConfig} builds the configuration in
code, pointing C{script_location} at this directory, and C{env.py} runs
the revisions on the connection handed to it.  L{upgrade} is what the
server and C{memcachier-admin} call before touching the database.

To write a new revision from a checkout::

    .venv/bin/python -c "from memcachier.control.migrations import \\
        alembicConfig; from alembic import command; \\
        command.revision(alembicConfig(), 'add alerts', rev_id='0002')"
"""

import os

from alembic import command
from alembic.config import Config


def alembicConfig(connection=None):
    """
    Build the Alembic configuration of the control plane.

    @param connection: the SQLAlchemy connection C{env.py} migrates, or
        L{None} when only the scripts are needed (C{revision}, C{history}).
    @rtype: L{alembic.config.Config}
    """
    config = Config()
    config.set_main_option("script_location", os.path.dirname(os.path.abspath(__file__)))
    config.attributes["connection"] = connection
    return config


def upgrade(engine, revision="head"):
    """
    Bring the control plane's database up to C{revision} (by default the
    newest), creating it if it is empty.  Safe to call on every start:
    nothing happens when the database is already current.

    Blocking; call it before the reactor runs or from a thread.

    @type engine: L{sqlalchemy.engine.Engine}
    """
    with engine.begin() as connection:
        command.upgrade(alembicConfig(connection), revision)


def currentRevision(engine):
    """
    @return: the revision the database is at, or L{None} if it has never
        been migrated.
    """
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
