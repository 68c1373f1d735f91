"""Re-export of :class:`data_checks.tables.RawTables`, which lives beside the contract that checks it."""

from data_checks.tables import RawTables

__all__ = ["RawTables"]
