"""The `hangar` command line: an HTTP client of the server like any other, plus `hangar serve`."""
