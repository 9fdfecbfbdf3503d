"""The feature store, one DuckDB file per build: `schema` (the format), `writer`
(`StoreWriter`, used by builds), `reader` (`Store`, used by the app) and `queries` (the
page-specific reads). All SQL of the project lives in this package; docs/store.md describes
the format.
"""
