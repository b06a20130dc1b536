"""The consumer API (SPEC §15): the REST surface a host product uses to embed the agents."""
