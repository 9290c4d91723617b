"""The Kubernetes edge of the operator: thin kopf handlers, API I/O, the alert webhook, the Prometheus
poller and the operator's own metrics. Decisions live in modelreuse.controller."""
