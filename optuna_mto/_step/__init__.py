"""One split's report step: the trial, the report pipeline, the board, checkpoints."""
