"""The data contract: Great Expectations suites for every table and one ``validate()``.

``validate(raw)`` checks :class:`~tasks.ingest.tables.RawTables` (interactions, social, kg, item_links,
features); ``validate_split(split)`` checks a split. Both return a :class:`ValidationReport`. Importing this
package does not import GX; the checks import it when they run.
"""

from data_checks.report import ExpectationOutcome, ValidationReport
from data_checks.validate import validate, validate_split

__all__ = ["ExpectationOutcome", "ValidationReport", "validate", "validate_split"]
