"""`trb plan`: predict what a deployment does under a load before deploying it.

`trace` turns `--trace` specs and recorded logs into arrivals, `service` reads a `trb sweep` run into
the service behaviour of one replica, `autoscaler` is the KEDA/HPA rule `trb deploy k8s` renders, and
`simulate` plays a trace through replicas of that service under that rule.
"""
