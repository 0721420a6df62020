//! CRI-format container logs (being written).
