#!/bin/bash
# Starts the compose stack's Kafka (apache/kafka image) as the hub runs it: KRaft, SCRAM-SHA-256 on the
# client listeners (no anonymous access), SASL/PLAIN on the controller listener, the StandardAuthorizer
# denying whatever no ACL allows, and the hub's principal `hub` as the only super user besides the controller.
# The same configuration as `hub broker start --secure` (hub/broker/manager.py, LocalBroker._secure_props).
#
# The `hub` SCRAM user is created when the storage is formatted (KRaft keeps SCRAM credentials in its metadata
# log, so the first user cannot be added over a SCRAM-only listener). Node users and their ACLs are created by
# the hub itself when it starts (its ACL follower syncs them from the control plane, like `hub acl sync`).
set -euo pipefail

: "${HUB_KAFKA_PASSWORD:?set HUB_KAFKA_PASSWORD (the hub principal's SCRAM password), e.g. in .env}"
: "${KAFKA_CONTROLLER_PASSWORD:?set KAFKA_CONTROLLER_PASSWORD (the controller listener's password), e.g. in .env}"
: "${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID (22 characters of base64url, e.g. from kafka-storage.sh random-uuid)}"
KAFKA_HOST="${KAFKA_HOST:-kafka}"                     # this broker's name in the compose network
KAFKA_EXTERNAL_PORT="${KAFKA_EXTERNAL_PORT:-29092}"   # its listener published to the host

CONFIG=/var/lib/kafka/server.properties
CLIENT=/var/lib/kafka/client.properties
SCRAM=org.apache.kafka.common.security.scram.ScramLoginModule
PLAIN=org.apache.kafka.common.security.plain.PlainLoginModule

umask 077  # both files hold passwords
cat > "$CONFIG" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:9093
listeners=CLIENT://:9092,CONTROLLER://:9093,EXTERNAL://:$KAFKA_EXTERNAL_PORT
advertised.listeners=CLIENT://$KAFKA_HOST:9092,EXTERNAL://localhost:$KAFKA_EXTERNAL_PORT
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.client.scram-sha-256.sasl.jaas.config=$SCRAM required username="hub" password="$HUB_KAFKA_PASSWORD";
listener.name.external.sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$PLAIN required username="hub-controller" password="$KAFKA_CONTROLLER_PASSWORD" user_hub-controller="$KAFKA_CONTROLLER_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:hub;User:hub-controller
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.num.partitions=10
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES

# for the healthcheck (kafka-broker-api-versions.sh --command-config) and for operators' admin tools
cat > "$CLIENT" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=$SCRAM required username="hub" password="$HUB_KAFKA_PASSWORD";
PROPERTIES

if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id="$KAFKA_CLUSTER_ID" -c "$CONFIG" \
    --add-scram "SCRAM-SHA-256=[name=hub,password=$HUB_KAFKA_PASSWORD]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
