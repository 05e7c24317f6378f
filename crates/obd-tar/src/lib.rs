//! Tar wrapper (placeholder until implemented).
