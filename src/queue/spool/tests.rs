//! Spool-specific tests (being written).
