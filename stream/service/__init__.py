"""The service at the edge: event contracts, settings, Kafka clients, the Faust worker and what
it publishes (enriched records, dead letters, drift, candidates, metrics, health). Never torch."""
