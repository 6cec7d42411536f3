//! Contract-faithful test servers.
