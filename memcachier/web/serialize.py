# -*- test-case-name: tests.unit.test_api -*-
"""
The JSON shapes of the analytics API v2, in one place: what a cache, a
credential and the stats look like on the wire, and how capability bodies
are read.  Field names are MemCachier's (C{sasl_username},
C{write_capability}, ...); the control plane's values use shorter ones.
"""

#: Wire name of each capability -> attribute of
#: L{memcachier.control.model.Credential}.
CAPABILITIES = {
    "write_capability": "write",
    "flush_capability": "flush",
    "api_capability": "api",
}

#: The fields of C{GET stats}, in the contract's order.
STATS_FIELDS = (
    "auth_cmds", "auth_errors", "bytes", "bytes_read", "bytes_written",
    "cas_badval", "cas_hits", "cas_misses", "cmd_delete", "cmd_flush",
    "cmd_get", "cmd_set", "cmd_touch", "curr_connections", "curr_items",
    "decr_hits", "decr_misses", "delete_hits", "delete_misses", "evictions",
    "expired", "get_hits", "get_misses", "incr_hits", "incr_misses",
    "limit_maxbytes", "time", "total_connections", "total_items",
    "touch_hits", "touch_misses",
)

#: Beyond the contract's fields: seconds the cache was held back by the
#: fair share or its budgets (a float, summed over servers).
HELD_BACK = "held_back_seconds"

#: What C{cache_type} and C{provider} say in C{info}.
CACHE_TYPE = "memcachier"
PROVIDER = "self-hosted"


def credentialJSON(credential):
    """
    @type credential: L{memcachier.control.model.Credential}
    @rtype: L{dict}
    """
    return {
        "id": credential.id,
        "cache_id": credential.cache_id,
        "sasl_username": credential.username,
        "sasl_password": credential.password,
        "write_capability": credential.write,
        "flush_capability": credential.flush,
        "api_capability": credential.api,
        "primary": credential.primary,
    }


def capabilitiesJSON(credential):
    """
    What C{PATCH credentials/<username>} answers: the three capabilities.

    @rtype: L{dict}
    """
    return {wire: getattr(credential, attribute) for wire, attribute in CAPABILITIES.items()}


def capabilitiesFromBody(body, omitted):
    """
    Keyword arguments for the control plane's credential methods from a
    capability body (already checked to hold only booleans of
    L{CAPABILITIES}).

    @param omitted: the value of a capability the body leaves out: L{False}
        for C{PATCH} (the contract says so), L{True} for C{POST}.
    @return: C{{"write": ..., "flush": ..., "api": ...}}
    """
    return {attribute: body.get(wire, omitted) for wire, attribute in CAPABILITIES.items()}


def cacheInfoJSON(cache, plan, credentials, servers, canSwitch):
    """
    The C{info} object.

    @type cache: L{memcachier.control.model.Cache}
    @type plan: L{memcachier.control.model.Plan}
    @param credentials: the cache's credentials, primary first.
    @param servers: its servers, C{host:port} strings.
    @param canSwitch: whether another cluster of its kind exists.
    """
    manage = not plan.development
    return {
        "id": cache.id,
        "name": cache.name,
        "label": cache.label,
        "cache_type": CACHE_TYPE,
        "plan": plan.memory,
        "provider": PROVIDER,
        "enabled": cache.enabled,
        "cluster_name": cache.cluster,
        "servers": list(servers),
        "credentials": [credentialJSON(c) for c in credentials],
        "can_switch": canSwitch,
        "can_manage_credentials": manage,
        "can_update_capabilities": manage,
        # Beyond MemCachier's fields, for the dashboard.
        "uuid": cache.uuid,
        "plan_name": plan.slug,
        "connection_limit": plan.connections,
    }


def statsJSON(perServer, now, limitMaxbytes):
    """
    C{GET stats}: the contract's fields summed over the cache's servers.

    @param perServer: one L{dict} of counters per server (as
        L{memcachier.runtime.CacheRuntime.statsDict} gives them); a server
        that has not served the cache yet is left out.
    @param now: the node's clock, seconds (C{time}).
    @param limitMaxbytes: C{limit_maxbytes} when no server has served the
        cache yet (its plan).
    """
    totals = {name: 0 for name in STATS_FIELDS}
    heldBack = 0.0
    for counters in perServer:
        for name in STATS_FIELDS:
            totals[name] += int(counters.get(name, 0))
        heldBack += float(counters.get(HELD_BACK, 0.0))
    totals[HELD_BACK] = round(heldBack, 6)
    if not perServer:
        totals["limit_maxbytes"] = limitMaxbytes
    totals["time"] = int(now)
    return totals
