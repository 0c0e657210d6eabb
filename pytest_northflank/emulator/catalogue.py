"""The read-only catalogue: deployment plans and regions (contract section 15).

The emulator models the API independently of the client: its plan list is its own copy of
Northflank's compute plans. Prices are illustrative (the clients carry no price list); CPU
and memory are what each plan's name says, and the emulator does not enforce them.
"""

from __future__ import annotations

from typing import Any

# (plan id, vCPU, memory in MB)
PLANS: tuple[tuple[str, float, int], ...] = (
    ("nf-compute-10", 0.1, 256),
    ("nf-compute-20", 0.2, 512),
    ("nf-compute-50", 0.5, 1024),
    ("nf-compute-100-1", 1.0, 1024),
    ("nf-compute-100-2", 1.0, 2048),
    ("nf-compute-100-4", 1.0, 4096),
    ("nf-compute-200", 2.0, 4096),
    ("nf-compute-200-4", 2.0, 4096),
    ("nf-compute-200-8", 2.0, 8192),
    ("nf-compute-200-16", 2.0, 16384),
    ("nf-compute-400", 4.0, 8192),
    ("nf-compute-400-16", 4.0, 16384),
    ("nf-compute-800-8", 8.0, 8192),
    ("nf-compute-800-16", 8.0, 16384),
    ("nf-compute-800-24", 8.0, 24576),
    ("nf-compute-800-32", 8.0, 32768),
    ("nf-compute-800-40", 8.0, 40960),
)
PLAN_IDS = tuple(plan_id for plan_id, _, _ in PLANS)
HOURS_PER_MONTH = 730
# Illustrative prices in USD: per vCPU-hour and per GB-hour.
CPU_HOUR_USD = 0.0231
GB_HOUR_USD = 0.0115


def plan_views() -> list[dict[str, Any]]:
    """``GET /v1/plans`` entries."""
    views = []
    for plan_id, cpu, ram in PLANS:
        per_hour = round(cpu * CPU_HOUR_USD + ram / 1024 * GB_HOUR_USD, 4)
        views.append(
            {
                "id": plan_id,
                "name": plan_id,
                "currency": "usd",
                "amountPerMonth": round(per_hour * HOURS_PER_MONTH, 2),
                "amountPerHour": per_hour,
                "cpuResource": cpu,
                "ramResource": ram,
            }
        )
    return views


def region_views(region: str) -> list[dict[str, Any]]:
    """``GET /v1/regions``: the emulator's one region, with no GPUs."""
    return [
        {
            "id": region,
            "name": "Emulator (this machine)",
            "regionName": "LOCAL",
            "gpuDevices": [],
        }
    ]


def cloud_provider_views(region: str) -> list[dict[str, Any]]:
    """``GET /v1/cloud-providers/regions``: one local provider with one zone."""
    return [
        {
            "id": region,
            "name": "Emulator (this machine)",
            "availabilityZones": [{"id": f"{region}-a", "name": f"{region}-a"}],
        }
    ]
