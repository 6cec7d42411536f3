//! The data plane: one process per unique source, reading it once and delivering to every product.
