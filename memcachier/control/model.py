# -*- test-case-name: tests.unit.test_control -*-
"""
Plain values of the control plane: plans, caches, credentials.

These are what the in-memory index hands to the hot path and what the
repository returns; they never hold a database connection.
"""

from typing import Optional

import attr


MiB = 1024 * 1024
GiB = 1024 * MiB


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Plan:
    """
    A memory plan, as MemCachier sells them.

    @ivar slug: the plan's name (C{dev}, C{100}, C{1g}, ...).
    @ivar memory: bytes of cache memory.
    @ivar connections: concurrent connections allowed per cache.
    @ivar item_size: largest key+value in bytes.
    @ivar development: whether this is a free development plan (no
        credential management, disabled after inactivity).
    @ivar requests_per_second: the most requests a second a cache of this
        plan may make before it is held back; L{None} for the node's
        default scaled by C{memory} (C{[limits] budget_requests}), C{0}
        for no ceiling.
    @ivar bytes_per_second: the same for bytes a second, in and out each
        (C{[limits] budget_bytes}).
    """

    slug: str
    memory: int
    connections: int
    item_size: int = MiB
    development: bool = False
    requests_per_second: Optional[int] = None
    bytes_per_second: Optional[int] = None


#: MemCachier's plans; C{dev} is 26214400 bytes as in MemCachier's info example.
DEFAULT_PLANS = (
    Plan("dev", 25 * MiB, 10, MiB, True),
    Plan("100", 100 * MiB, 250),
    Plan("250", 250 * MiB, 500),
    Plan("500", 500 * MiB, 1000),
    Plan("1g", GiB, 2000),
    Plan("2g", 2 * GiB, 4000),
    Plan("5g", 5 * GiB, 10000),
)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Cache:
    """
    One tenant: a cache with its own keyspace, plan and credentials.
    """

    id: int
    name: str
    label: str
    plan: str
    enabled: bool
    cluster: str
    sso_secret: str
    created_at: float
    last_active: float
    #: Heroku's resource id, or a random uuid (what Heroku SSO names).
    uuid: str = ""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Credential:
    """
    A username/password of a cache with its capabilities.
    """

    id: int
    cache_id: int
    username: str
    password: str = attr.ib(repr=False)
    write: bool = True
    flush: bool = True
    api: bool = True
    primary: bool = False
