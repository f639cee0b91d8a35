"""Who runs which split: claims, lifecycles, executors, workers and process groups."""
