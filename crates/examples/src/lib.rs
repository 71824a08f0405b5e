//! Examples of resilient-redis with an observability stack (see `examples/`): no library code.
