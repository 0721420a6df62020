//! Defaulting and validation per resource.
