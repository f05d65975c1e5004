"""The ``eoflow`` command line."""
