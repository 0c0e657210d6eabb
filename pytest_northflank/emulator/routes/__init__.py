"""The emulator's routes, one module per surface: ``rest`` (``/v1`` projects, tags, services),
``service_updates`` (patch, put, deployment, runtime environment, ports, health checks),
``secrets`` (secret groups), ``jobs`` and ``job_logs`` (jobs, runs and their logs),
``catalogue`` (login, auth, plans, regions), ``exec`` (the command WebSocket), ``logs`` (log
queries and the tail WebSocket), ``control`` (``/_emulator/``). ``app.py`` puts them together."""
