"""The emulator's routes, one module per surface: ``rest`` (``/v1`` projects, tags, services),
``exec`` (the command WebSocket), ``logs`` (log queries and the tail WebSocket), ``control``
(``/_emulator/``). ``app.py`` puts them together."""
