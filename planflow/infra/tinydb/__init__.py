"""The TinyDB driver: pure Python, for the PlanFlow screen-reader add-on, whose Python has no ``sqlite3``.

Open a store the way the add-on does::

    from tinydb import TinyDB
    from planflow.infra.tinydb import CrashSafeJSONStorage, TinyDbExecutionRepository

    executions = TinyDbExecutionRepository(TinyDB("planflow.json", storage=CrashSafeJSONStorage))

and ``TinyDB(storage=MemoryStorage)`` in tests.
"""

from planflow.infra.tinydb.executions import TinyDbExecutionRepository
from planflow.infra.tinydb.storage import CorruptStoreError, CrashSafeJSONStorage, StoreWriteError

__all__ = ["CorruptStoreError", "CrashSafeJSONStorage", "StoreWriteError", "TinyDbExecutionRepository"]
