"""
Assembling a node: settings, composition, twistd glue, TLS contexts,
shutdown, the allocator check and the fenced fast paths.
"""
