"""pikenas: results."""
