"""
Tests for L{memcachier.stores.discovery}: store plugin discovery.
"""

import importlib
import itertools
import sys
import textwrap

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from zope.interface.verify import verifyObject

from memcachier.interfaces import IStore, IStorePlugin
from memcachier.stores.discovery import (
    AUTO,
    StorePluginError,
    chooseStore,
    findStorePlugin,
    makeStore,
    storePlugins,
)
from memcachier.stores.memory import MemoryStore
from memcachier.stores.segment import SegmentStore

_counter = itertools.count()


@pytest.fixture
def pluginPackage(tmp_path, monkeypatch):
    """
    A function making a fresh plugin package on C{sys.path} holding the
    given dropin modules (name to source), returning the package.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(**modules):
        name = f"fakeplugins{next(_counter)}"
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for module, source in modules.items():
            (package / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        imported = importlib.import_module(name)
        monkeypatch.delitem(sys.modules, name)
        return imported

    return make


HEADER = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from memcachier.interfaces import IStorePlugin
"""


def test_memoryPlugin():
    """
    The built-in C{memory} plugin is found in L{memcachier.plugins} and
    makes an L{IStore}.
    """
    plugin = findStorePlugin("memory")
    assert verifyObject(IStorePlugin, plugin)
    store = makeStore("memory", {}, Clock())
    assert verifyObject(IStore, store)


def test_autoIsTheSegmentStore():
    """
    C{"auto"} (the default) makes the segment store where its C module
    was built, and says nothing was passed over; a name is taken as it is.
    """
    name, store, passedOver = chooseStore(AUTO, {}, Clock())
    assert (name, type(store), passedOver) == ("segment", SegmentStore, "")
    name, store, passedOver = chooseStore("memory", {"compact_tables": True}, Clock())
    assert (name, type(store), passedOver) == ("memory", MemoryStore, "")


def test_autoWithAMemoryStoreSetting():
    """
    A setting only the memory store takes (C{compact_tables}) makes
    C{"auto"} choose it, saying why; given to the segment store by name,
    it is an error naming the setting.
    """
    name, store, passedOver = chooseStore(AUTO, {"compact_tables": True}, Clock())
    assert (name, type(store)) == ("memory", MemoryStore)
    assert store._compactTables
    assert passedOver == "segment: the segment store takes no [store] settings; given: compact_tables"
    with pytest.raises(StorePluginError, match="given: compact_tables"):
        chooseStore("segment", {"compact_tables": True}, Clock())


def test_autoWithoutTheCModule(monkeypatch):
    """
    Installed without the segment store's C module, C{"auto"} makes the
    memory store and says why; asked for by name, the segment store is
    refused.
    """
    from memcachier.stores import segment

    monkeypatch.setattr(segment, "_segments", None)
    name, store, passedOver = chooseStore(AUTO, {}, Clock())
    assert (name, type(store)) == ("memory", MemoryStore)
    assert passedOver.startswith("segment: the segment store needs memcachier._segments")
    with pytest.raises(StorePluginError, match="C compiler"):
        chooseStore("segment", {}, Clock())


def test_unknownName():
    """
    An unknown name is an error listing the available plugins.
    """
    with pytest.raises(StorePluginError) as info:
        findStorePlugin("redis")
    assert str(info.value) == "no store plugin named 'redis'; available: memory, segment"


def test_brokenPluginNamesItself(pluginPackage):
    """
    A plugin claiming L{IStorePlugin} without implementing it fails
    discovery loudly, naming itself.
    """
    package = pluginPackage(
        broken=HEADER
        + """
@implementer(IPlugin, IStorePlugin)
class Half:
    name = "half"
    description = "no makeStore"

half = Half()
"""
    )
    with pytest.raises(StorePluginError) as info:
        storePlugins(package)
    message = str(info.value)
    assert "'half'" in message
    assert ".broken.Half" in message
    assert "makeStore" in message


def test_unimportablePlugin(pluginPackage):
    """
    A dropin that cannot be imported stops discovery instead of being
    skipped with a log message.
    """
    package = pluginPackage(bad="raise RuntimeError('kaboom')\n")
    with pytest.raises(StorePluginError) as info:
        storePlugins(package)
    assert "kaboom" in str(info.value)


def test_thirdPartyPlugin(pluginPackage):
    """
    A well-formed plugin in another package is found by name.
    """
    package = pluginPackage(
        good=HEADER
        + """
@implementer(IPlugin, IStorePlugin)
class Good:
    name = "good"
    description = "fine"
    def makeStore(self, settings, reactor):
        return None

good = Good()
"""
    )
    assert sorted(storePlugins(package)) == ["good"]
    assert findStorePlugin("good", package).description == "fine"
    with pytest.raises(StorePluginError) as info:
        makeStore("good", {}, Clock(), package)
    assert "does not implement IStore" in str(info.value)


def test_twistdPlugin():
    """
    twistd finds the C{memcachier} service maker.
    """
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    assert makers["memcachier"].module == "memcachier.node.tap"
