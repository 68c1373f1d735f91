"""The data contract: Great Expectations suites for every table and one ``validate()``."""
