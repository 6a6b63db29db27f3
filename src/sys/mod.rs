//! The service's place in the system: the capabilities it keeps, what it tells systemd,
//! and where it logs.

pub(crate) mod caps;
pub(crate) mod logging;
pub(crate) mod notify;
