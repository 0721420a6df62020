//! The local image store (being written; see the module contract in the brief).
