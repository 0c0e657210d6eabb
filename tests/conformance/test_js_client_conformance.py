"""The official JS client (``@northflank/js-client``, unmodified) against the emulator."""

from __future__ import annotations

from node_testing import run_js
from sdk_testing import PROJECT, unique_name

from pytest_northflank.emulator import EmulatorServer

MANUAL_JOB = r"""
const { ApiClient, ApiClientInMemoryContextProvider } = require(process.env.NF_JS_CLIENT);
(async () => {
  const context = new ApiClientInMemoryContextProvider();
  await context.addContext({ name: 'emu', token: process.env.NF_TOKEN, host: process.env.NF_HOST });
  const api = new ApiClient(context, { throwErrorOnHttpErrorCode: true });
  const parameters = { projectId: process.env.PROJECT };
  const job = await api.create.job.manual({ parameters, data: {
    name: process.env.JOB_NAME,
    billing: { deploymentPlan: 'nf-compute-20' },
    backoffLimit: 0,
    activeDeadlineSeconds: 600,
    runtimeEnvironment: { WHO: 'job' },
    deployment: {
      external: { imagePath: 'ubuntu:22.04' },
      docker: { configType: 'customCommand', customCommand: "sh -c 'echo hello $WHO $EXTRA'" },
    },
  } });
  const jobParams = { ...parameters, jobId: job.data.id };
  const started = await api.start.job.run({ parameters: jobParams, data: {
    runtimeEnvironment: { EXTRA: 'override' } } });
  let run;
  for (let i = 0; i < 600; i++) {
    run = (await api.get.job.run({ parameters: { ...jobParams, runId: started.data.id } })).data;
    if (run.status !== 'RUNNING') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const runs = (await api.get.job.runs({ parameters: jobParams })).data.runs;
  const logs = await api.logs.getJobLogs({ parameters: jobParams,
    options: { runId: started.data.id, direction: 'forward' } });
  const listed = (await api.list.jobs({ parameters })).data.jobs.map((j) => j.id);
  await api.delete.job({ parameters: jobParams });
  const after = (await api.list.jobs({ parameters })).data.jobs.map((j) => j.id);
  console.log(JSON.stringify({ job: job.data, started: started.data, run, runs,
    logs: logs.data.map((l) => l.log), listed, after }));
})().catch((e) => { console.error(e); process.exit(1); });
"""

SERVICE_UPDATES = r"""
const { ApiClient, ApiClientInMemoryContextProvider } = require(process.env.NF_JS_CLIENT);
(async () => {
  const context = new ApiClientInMemoryContextProvider();
  await context.addContext({ name: 'emu', token: process.env.NF_TOKEN, host: process.env.NF_HOST });
  const api = new ApiClient(context, { throwErrorOnHttpErrorCode: true });
  const parameters = { projectId: process.env.PROJECT };
  const created = await api.create.service.deployment({ parameters, data: {
    name: process.env.SERVICE_NAME,
    billing: { deploymentPlan: 'nf-compute-20' },
    deployment: { instances: 1, external: { imagePath: 'ubuntu:22.04' },
      docker: { configType: 'customCommand', customCommand: 'sleep infinity' } },
  } });
  const svc = { ...parameters, serviceId: created.data.id };
  const patched = await api.patch.service.deployment({ parameters: svc, data: {
    runtimeEnvironment: { MODE: 'patched' },
    ports: [{ name: 'api', internalPort: 9000, protocol: 'TCP' }] } });
  const env = await api.update.service.runtimeEnvironment({ parameters: svc, data: {
    runtimeEnvironment: { MODE: 'posted' } } });
  await api.update.service.ports({ parameters: svc, data: { ports: [
    { id: 'api', name: 'api', internalPort: 9001, protocol: 'TCP' }] } });
  const ports = (await api.get.service.ports({ parameters: svc })).data.ports;
  const shown = (await api.get.service.runtimeEnvironment({ parameters: svc })).data;
  const plans = (await api.list.plans({})).data.plans.map((p) => p.id);
  const secret = await api.create.secret({ parameters, data: {
    name: process.env.SERVICE_NAME + '-sg', secretType: 'environment', priority: 1,
    secrets: { variables: { K: 'v' } } } });
  const secrets = (await api.list.secrets({ parameters })).data.secrets.map((s) => s.id);
  await api.delete.secret({ parameters: { ...parameters, secretId: secret.data.id } });
  await api.delete.service({ parameters: svc });
  console.log(JSON.stringify({ patched: patched.data, env: env.data, ports, shown, plans,
    secret: secret.data.id, secrets }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_a_manual_job_runs_to_success_with_readable_logs(emulator: EmulatorServer) -> None:
    name = unique_name("js-job")
    result = run_js(emulator, MANUAL_JOB, PROJECT=PROJECT, JOB_NAME=name)
    assert result["job"]["jobType"] == "manual"
    assert result["run"]["status"] == "SUCCESS"
    assert result["run"]["concluded"] is True
    assert result["runs"][0]["id"] == result["started"]["id"]
    assert result["logs"] == ["hello job override"]
    assert result["job"]["id"] in result["listed"]
    assert result["job"]["id"] not in result["after"]


def test_service_patch_runtime_environment_ports_plans_and_secrets(
    emulator: EmulatorServer,
) -> None:
    name = unique_name("js-svc")
    result = run_js(emulator, SERVICE_UPDATES, PROJECT=PROJECT, SERVICE_NAME=name)
    assert result["patched"]["runtimeEnvironment"] == {"MODE": "patched"}
    assert result["env"] == {"success": True, "restartSuccessful": True}
    assert [(p["id"], p["internalPort"]) for p in result["ports"]] == [("api", 9001)]
    assert result["shown"]["runtimeEnvironment"] == {"MODE": "posted"}
    assert "nf-compute-20" in result["plans"]
    assert result["secret"] in result["secrets"]
