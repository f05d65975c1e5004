"""Reference data: class tables (ids, names, colours) read from vector layers."""
