//! The service proxy (being written).
