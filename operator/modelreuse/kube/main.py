"""``modelreuse operator``: run the kopf operator, cluster-wide or in the given namespaces.

Settings come from flags, else ``MODELREUSE_*`` environment variables (see modelreuse.settings). Peering is
off (standalone): run one replica with the Recreate strategy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from modelreuse.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("-n", "--namespace", action="append", dest="namespaces",
                        help="watch only this namespace (repeatable); cluster-wide when omitted")
    parser.add_argument("--runtime-image", help="image running `modelreuse evaluate|adapt|serve`")
    parser.add_argument("--runtime-gpu-image", help="image for inference pods that ask for a GPU")
    parser.add_argument("--artifacts", dest="artifacts_uri", help="default artifact store URI prefix")
    parser.add_argument("--job-node-selector", help="key=value[,key=value] node selector of workload Jobs")
    parser.add_argument("--resync-seconds", type=float, help="how often every object is reconciled anyway")
    parser.add_argument("--api-concurrency", type=int, help="Kubernetes API calls in flight at once (default 16)")
    parser.add_argument("--api-status-concurrency", type=int,
                        help="status writes in flight at once, on their own pool so children go first (default 4)")
    parser.add_argument("--result-grace-seconds", type=float,
                        help="how long a finished Job may lack its termination message before it is failed")
    parser.add_argument("--watch-server-timeout", type=int, help="server-side watch timeout (seconds)")
    parser.add_argument("--watch-client-timeout", type=int, help="client-side watch timeout (seconds)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz")
    parser.add_argument("--webhook-port", type=int, help="port of POST /alerts (may equal --metrics-port)")
    parser.add_argument("--webhook-token-secret", help="namespace/name of the Secret holding the alert token")
    parser.add_argument("--prometheus-url", help="Prometheus base URL for retraining queries")
    parser.add_argument("--prometheus-interval", dest="prometheus_interval_seconds", type=float)
    parser.add_argument("--verbose", action="store_true")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: getattr(args, k, None)
        for k in ("runtime_image", "runtime_gpu_image", "artifacts_uri", "resync_seconds", "api_concurrency",
                  "api_status_concurrency", "result_grace_seconds", "watch_server_timeout", "watch_client_timeout",
                  "metrics_port", "webhook_port", "webhook_token_secret", "prometheus_url",
                  "prometheus_interval_seconds")
    }
    if args.namespaces:
        overrides["namespaces"] = tuple(args.namespaces)
    if args.job_node_selector:
        overrides["job_node_selector"] = dict(p.split("=", 1) for p in args.job_node_selector.split(",") if "=" in p)
    return Settings.from_env(**overrides)


def run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before the client library is imported: it reads $KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    import kopf
    from aiohttp import web

    from modelreuse.kube import client
    from modelreuse.kube.handlers import make_state, objects, register, trigger_info
    from modelreuse.kube.prometheus import PrometheusPoller
    from modelreuse.kube.webhook import AlertReceiver

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kopf logs every handler success at INFO; our Events already say what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    settings = settings_from_args(args)
    client.load_config(args.kubeconfig)
    state = make_state(settings)
    registry = kopf.OperatorRegistry()
    register(registry, settings, state)

    @kopf.on.startup(registry=registry)
    async def start_endpoints(**kwargs: Any) -> None:
        bodies = kwargs.get("mr_bodies")

        def targets():
            return [(key, trigger_info(body)) for key, body in objects(bodies)]

        def phases():
            return [(body.get("status") or {}).get("phase") or "Pending" for _, body in objects(bodies)]

        state["metrics"].count_phases_from(phases)
        receiver = AlertReceiver(settings, state["kube"], state["metrics"], targets)
        apps: dict[int, web.Application] = {}
        apps.setdefault(settings.metrics_port, web.Application()).add_routes(state["metrics"].routes())
        apps.setdefault(settings.webhook_port, web.Application(client_max_size=1 << 20)).add_routes(receiver.routes())
        runners = []
        for port, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.metrics_host, port).start()
            runners.append(runner)
        state["runners"] = runners
        if settings.prometheus_url:
            poller = PrometheusPoller(settings, state["kube"], targets, metrics=state["metrics"])
            state["poller"] = asyncio.get_running_loop().create_task(poller.run())

    @kopf.on.cleanup(registry=registry)
    async def stop_endpoints(**_: Any) -> None:
        if "poller" in state:
            state["poller"].cancel()
        for runner in state.get("runners", []):
            await runner.cleanup()

    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
    )
    return 0
