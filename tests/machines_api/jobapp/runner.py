"""A job runner as apps write them: for each job, a machine of the app's own image
(FLY_IMAGE_REF) made through the Machines API, waited for, its exit code read from its
events, then destroyed. Only the standard library and the variables a machine gets.

MACHINES_API_URL: where the API is (a machine's default: http://_api.internal:4280);
FLY_API_TOKEN: the token. Results go to RESULTS_FILE as JSON."""

import json
import os
import sys
import urllib.error
import urllib.request

API = os.environ.get("MACHINES_API_URL", "http://_api.internal:4280").rstrip("/")
TOKEN = os.environ.get("FLY_API_TOKEN", "")
APP = os.environ["FLY_APP_NAME"]
IMAGE = os.environ["FLY_IMAGE_REF"]


def call(method, path, body=None):
    request = urllib.request.Request(
        f"{API}/v1/apps/{APP}/machines{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def run_job(number):
    status, machine = call(
        "POST",
        "",
        {
            "config": {
                "image": IMAGE,
                "init": {"cmd": ["python3", "job.py", str(number)]},
                "restart": {"policy": "no"},
                "auto_destroy": False,
                "metadata": {"job": str(number)},
            }
        },
    )
    if status != 200:
        return {"job": number, "error": f"create: {status} {machine}"}
    machine_id, instance = machine["id"], machine["instance_id"]
    wait = f"/{machine_id}/wait?state=stopped&instance_id={instance}&timeout=60"
    status, waited = call("GET", wait)
    if status != 200:
        return {"job": number, "error": f"wait: {status} {waited}"}
    status, events = call("GET", f"/{machine_id}/events")
    exits = [e for e in events if e["type"] == "exit"]
    code = exits[0]["request"]["exit_event"]["exit_code"] if exits else None
    status, _ = call("DELETE", f"/{machine_id}")
    return {"job": number, "machine": machine_id, "exit_code": code, "destroyed": status}


results = [run_job(n) for n in (1, 2, 3)]
with open(os.environ.get("RESULTS_FILE", "results.json"), "w") as out:
    json.dump(results, out)
print("runner done", flush=True)
sys.exit(0)
