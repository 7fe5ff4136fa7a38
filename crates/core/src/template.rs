//! Operator templates (minijinja). (placeholder)
