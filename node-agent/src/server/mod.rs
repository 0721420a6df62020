//! The agent's HTTP endpoint (being written).
