"""pytest entry point ``northflank``: options, markers and reports for Northflank sandboxes."""
