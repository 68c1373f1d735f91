"""Reading every source into :class:`~tasks.ingest.tables.RawTables`, then into a :class:`Dataset`."""
