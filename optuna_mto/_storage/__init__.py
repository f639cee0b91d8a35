"""The database: every stored name, retries, the storage and Optuna's internals."""
