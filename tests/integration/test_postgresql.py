"""
The service on a PostgreSQL control plane, as several nodes would run it:
started as a user starts it, managed with memcachier-admin on the same URL,
used by a real SASL client.
"""

import time

import bmemcached
import pytest
from bmemcached.exceptions import MemcachedException


def test_serverOnPostgreSQL(memcachier_server_factory, postgresql_url):
    """
    With C{[database] url} pointing at PostgreSQL the server migrates the
    schema, serves the caches stored there, and sees a credential made by
    the admin CLI within 2 s.
    """
    server = memcachier_server_factory(database=postgresql_url, web=False)
    client = bmemcached.Client((f"127.0.0.1:{server.port}",), server.username, server.password)
    assert client.set("k", "on postgres")
    assert client.get("k") == "on postgres"

    made = server.admin("credential", "create", str(server.cache_id), "--read-only")
    deadline = time.time() + 2
    while True:
        reader = bmemcached.Client((f"127.0.0.1:{server.port}",), made["username"], made["password"])
        try:
            value = reader.get("k")
        except Exception:
            value = None
        if value == "on postgres" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert value == "on postgres"
    with pytest.raises(MemcachedException) as refused:
        reader.set("k", "read-only")
    assert refused.value.code == 5  # not stored
    assert client.get("k") == "on postgres"
