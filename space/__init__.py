"""pikenas: space."""
