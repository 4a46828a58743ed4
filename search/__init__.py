"""pikenas: search."""
