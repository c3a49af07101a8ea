"""Places: which grid a case belongs to (routing), addresses as said and written, and the
routing indexes (grid polygons, gazetteer)."""
