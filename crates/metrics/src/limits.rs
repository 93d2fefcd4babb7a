//! The metrics crate's limits, in one place.

/// Most live sources one [`crate::Registry`] holds: a worker, a producer or a broker each
/// register one, so a process near this limit is leaking registrations.
pub const SOURCES_MAX: usize = 1024;
