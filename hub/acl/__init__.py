"""Broker-level isolation of nodes: each node's Kafka user and ACLs, derived from the live control plane.

``hub broker start --secure`` runs the local broker with SCRAM-SHA-256 + the StandardAuthorizer (the hub's
principal ``User:hub`` is a super user); ``hub acl sync`` then gives each live node of the control plane
(``hub.nodes``) a SCRAM user named by its node id and exactly the ACLs of ``plan.node_acls``, and removes what
removed nodes or shrunk rights left. While the API runs on a secure broker, ``follow.AclFollower`` does the same
for each node registered or removed through ``/v1/nodes``, in the background.
Hub processes run as ``User:hub`` with ``eval "$(hub acl env)"`` (the ``HUB_KAFKA_*`` variables).
"""
