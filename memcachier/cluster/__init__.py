"""
Several nodes serving one cache: membership in the control plane
(L{membership}), libmemcached-compatible ketama placement (L{ring}),
forwarding over authenticated peer connections (L{peer}) and the keyspace
that wraps the local one (L{keyspace}).  See docs/cluster.md.
"""
