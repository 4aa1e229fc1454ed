//! Unit tests of the volume core against in-memory fakes.
