"""
memcachier's plugin package: store plugins (L{memcachier.interfaces.IStorePlugin})
are dropins in this package or in a C{memcachier/plugins/} directory of any
other distribution on C{sys.path}.

A third-party store ships a module such as C{memcachier/plugins/redis_store.py}
(no C{__init__.py} in that directory) holding an object that provides
C{IStorePlugin}; L{memcachier.stores.discovery.findStorePlugin} finds it.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__ = []
