"""The TinyDB driver: pure Python, for the PlanFlow screen-reader add-on, whose Python has no ``sqlite3``.

Open a store the way the add-on does::

    from tinydb import TinyDB
    from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository

    with TinyDB("planflow.json", storage=JournaledStorage) as db:
        executions = TinyDbExecutionRepository(db)

(``open_provider("tinydb:///planflow.json")`` does the same), and ``TinyDB(storage=MemoryStorage)`` in tests.
``CrashSafeJSONStorage``, which rewrites the whole file on every write, still opens the same files.
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
