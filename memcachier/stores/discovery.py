# -*- test-case-name: tests.unit.test_discovery -*-
"""
Discovery of store plugins.

Store plugins are dropins in the L{memcachier.plugins} package that provide
L{IStorePlugin}; the config's C{[store] plugin} key picks one by name.
Like Buildbot's plugin database, a plugin that does not implement its
interface fails loudly and names itself instead of being skipped.
"""

from collections.abc import Mapping
from types import ModuleType
from typing import Any, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from zope.interface import provider
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from memcachier.interfaces import IStore, IStorePlugin


class StorePluginError(Exception):
    """
    A store plugin is missing or broken.  The message names the plugin (or
    lists the available ones).
    """


#: C{[store] plugin = "auto"} (the default) is the first of these whose
#: store can be made here: the segment store where its C module was built
AUTO = "auto"
AUTO_ORDER = ("segment", "memory")


def _pluginName(plugin: object) -> str:
    name = getattr(plugin, "name", None)
    where = getattr(type(plugin), "__module__", "?")
    return f"{name!r} ({where}.{type(plugin).__qualname__})"


def _loadPlugins(package: ModuleType) -> list[IStorePlugin]:
    """
    L{getPlugins} logs and skips a dropin that cannot be imported or
    adapted; we want that to stop the server, so collect what it logs.
    """
    failures: list[Failure] = []

    @provider(ILogObserver)
    def observer(event: LogEvent) -> None:
        # twisted.plugin logs with the legacy log.err: "failure", not
        # "log_failure".
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            failures.append(failure)

    globalLogPublisher.addObserver(observer)
    try:
        plugins = list(getPlugins(IStorePlugin, package))
    finally:
        globalLogPublisher.removeObserver(observer)
    if failures:
        f = failures[0]
        raise StorePluginError(
            f"a plugin in {package.__name__} failed to load: "
            f"{type(f.value).__name__}: {f.getErrorMessage()}"
            f"\n{f.getTraceback()}"
        )
    return plugins


def storePlugins(package: ModuleType | None = None) -> dict[str, IStorePlugin]:
    """
    Every store plugin, checked.

    @param package: the plugin package to search, by default
        L{memcachier.plugins}.
    @return: L{dict} of plugin name to plugin.
    @raise StorePluginError: a plugin does not implement L{IStorePlugin}
        (as C{verifyObject} sees it) or two plugins share a name.
    """
    if package is None:
        import memcachier.plugins as default

        package = default
    found: dict[str, IStorePlugin] = {}
    for plugin in _loadPlugins(package):
        try:
            verifyObject(IStorePlugin, plugin)
        except Invalid as e:
            raise StorePluginError(
                f"store plugin {_pluginName(plugin)} does not implement IStorePlugin: {e}"
            ) from e
        if not isinstance(plugin.name, str) or not plugin.name:
            raise StorePluginError(
                f"store plugin {_pluginName(plugin)} has no name (a non-empty str)"
            )
        other = found.get(plugin.name)
        if other is not None and type(other) is not type(plugin):
            raise StorePluginError(
                f"two store plugins are named {plugin.name!r}: "
                f"{_pluginName(other)} and {_pluginName(plugin)}"
            )
        found[plugin.name] = plugin
    return found


def findStorePlugin(name: str, package: ModuleType | None = None) -> IStorePlugin:
    """
    The store plugin called C{name}.

    @type name: L{str}
    @param package: the plugin package to search, by default
        L{memcachier.plugins}.
    @rtype: L{IStorePlugin}
    @raise StorePluginError: no plugin has that name (the message lists the
        available ones), or a plugin is broken.
    """
    plugins = storePlugins(package)
    plugin = plugins.get(name)
    if plugin is None:
        available = ", ".join(sorted(plugins)) or "none"
        raise StorePluginError(
            f"no store plugin named {name!r}; available: {available}"
        )
    return plugin


def makeStore(
    name: str, settings: Mapping[str, Any], reactor: IReactorTime,
    package: ModuleType | None = None,
) -> IStore:
    """
    Build the store the config asks for.

    @param name: the plugin name (C{settings.store.plugin}).
    @param settings: the rest of the C{[store]} table.
    @param reactor: the store's clock.
    @rtype: L{IStore}
    @raise StorePluginError: the plugin is missing or broken, or what it
        built does not implement L{IStore}.
    """
    plugin = findStorePlugin(name, package)
    store = plugin.makeStore(settings, reactor)
    try:
        verifyObject(IStore, store)
    except Invalid as e:
        raise StorePluginError(
            f"store plugin {_pluginName(plugin)} made {store!r}, "
            f"which does not implement IStore: {e}"
        ) from e
    return store


def chooseStore(
    name: str, settings: Mapping[str, Any], reactor: IReactorTime,
    package: ModuleType | None = None,
) -> Tuple[str, IStore, str]:
    """
    Build the store the config asks for, resolving L{AUTO}: the first of
    L{AUTO_ORDER} that can be made here (a plugin may refuse with
    L{StorePluginError}, as the segment store does without its C module).

    @return: the plugin's name, the store, and why an earlier choice of
        L{AUTO_ORDER} was passed over (C{""} if none was).
    @raise StorePluginError: as L{makeStore}; for L{AUTO}, what the last
        candidate raised.
    """
    if name != AUTO:
        return name, makeStore(name, settings, reactor, package), ""
    *preferred, last = AUTO_ORDER
    passedOver: list[str] = []
    for candidate in preferred:
        try:
            return candidate, makeStore(candidate, settings, reactor, package), "; ".join(passedOver)
        except StorePluginError as e:
            passedOver.append(f"{candidate}: {e}")
    return last, makeStore(last, settings, reactor, package), "; ".join(passedOver)
