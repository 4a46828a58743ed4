"""pikenas: evaluators."""
