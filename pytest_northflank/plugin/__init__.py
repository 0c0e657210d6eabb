"""The pytest plugin (entry point ``northflank``): hooks, fixtures, xdist glue, reporting.

pytest loads this package as the plugin, so it re-exports the hooks of :mod:`.hooks` and the
fixtures of :mod:`.fixtures`. Loading it costs next to nothing: settings (pydantic), the API
client (httpx, websockets) and the emulator are imported when a session starts or a test first
asks for a sandbox.
"""

from __future__ import annotations

from pytest_northflank.plugin.fixtures import (
    nf_client,
    nf_provisioner,
    nf_sandbox,
    nf_sandbox_factory,
    nf_sandbox_session,
    nf_sandbox_shared,
    nf_settings,
)
from pytest_northflank.plugin.hooks import (
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_fixture_setup,
    pytest_make_collect_report,
    pytest_report_header,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)

__all__ = [
    "nf_client",
    "nf_provisioner",
    "nf_sandbox",
    "nf_sandbox_factory",
    "nf_sandbox_session",
    "nf_sandbox_shared",
    "nf_settings",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_fixture_setup",
    "pytest_make_collect_report",
    "pytest_report_header",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
]
