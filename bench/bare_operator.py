"""The floor for the operator benchmark: a kopf operator whose only handler creates one Job per ModelReuse,
through the same client library and thread hop as the real operator. Run: python bench/bare_operator.py NS"""

from __future__ import annotations

import asyncio
import sys
import warnings

import kopf
from kubernetes import client, config

warnings.filterwarnings("ignore", message="Unverified HTTPS request")
config.load_kube_config()
batch = client.BatchV1Api()


@kopf.on.login()
def login(**kwargs):
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.level = 40
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.event("modelreuse.io", "v1alpha1", "modelreuses")
async def make_job(event, name, namespace, uid, **_):
    if event.get("type") == "DELETED":
        return
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{name}-job", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "modelreuse.io/v1alpha1", "kind": "ModelReuse",
                                          "name": name, "uid": uid, "controller": True}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "nodeSelector": {"modelreuse.io/test-kubelet": "true"},
            "containers": [{"name": "w", "image": "registry.test/noop:1"}]}}},
    }

    def create():
        try:
            batch.create_namespaced_job(namespace, job)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    await asyncio.to_thread(create)


if __name__ == "__main__":
    kopf.run(standalone=True, namespaces=[sys.argv[1]], clusterwide=False)
