//! Import of an innovaphone PHP update server installation. (placeholder)
