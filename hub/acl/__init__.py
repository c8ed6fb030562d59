"""Broker-level isolation of nodes: each node's Kafka user and ACLs, derived from the node registry.

``hub broker start --secure`` runs the local broker with SCRAM-SHA-256 + the StandardAuthorizer (the hub's
principal ``User:hub`` is a super user); ``hub acl sync`` then gives each registered node a SCRAM user named by
its node id and exactly the ACLs of ``plan.node_acls``, and removes what removed nodes or shrunk rights left.
Hub processes run as ``User:hub`` with ``eval "$(hub acl env)"`` (the ``HUB_KAFKA_*`` variables).
"""
