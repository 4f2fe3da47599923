"""The trusted core: metadata database, encrypted dataset store, keys, catalog, audit log."""
