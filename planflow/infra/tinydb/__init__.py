"""The TinyDB driver: pure Python, for the PlanFlow screen-reader add-on, whose Python has no ``sqlite3``.

Open a store the way the add-on does::

    from tinydb import TinyDB
    from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository

    with TinyDB("planflow.json", storage=JournaledStorage) as db:
        executions = TinyDbExecutionRepository(db)

(``open_provider("tinydb:///planflow.json")`` does the same), and ``TinyDB(storage=MemoryStorage)`` in tests.
``CrashSafeJSONStorage``, which rewrites the whole file on every write, still opens the same files;
``JournaledStorage(path, read_only=True)`` (``read_only=True`` in the config) reads a store without changing
anything.

The modules, one idea each: ``journal`` (the journaled storage and its files), ``storage`` (the crash-safe one),
``files`` (atomic replacement, decoding a file), ``lock`` (one writer per store), ``documents`` (operations and
document ids), ``engine`` (indexed tables and units of work over a storage), ``executions`` (the repository,
on the shared rules of :mod:`planflow.infra.execution_rules`), ``metadata``, ``core`` (the provider's) and ``open``.
"""

from planflow.errors import CorruptStoreError, StoreLockedError, StoreWriteError
from planflow.infra.tinydb.executions import TinyDbExecutionRepository
from planflow.infra.tinydb.journal import JournaledStorage, read_store
from planflow.infra.tinydb.storage import CrashSafeJSONStorage

__all__ = [
    "CorruptStoreError",
    "CrashSafeJSONStorage",
    "JournaledStorage",
    "StoreLockedError",
    "StoreWriteError",
    "TinyDbExecutionRepository",
    "read_store",
]
