"""The study: open, optimize, the cross-split summary and the final outputs."""
