"""Federation of hubs on separate Kafka clusters through Apache Kafka MirrorMaker 2 (see docs/federation.md)."""
