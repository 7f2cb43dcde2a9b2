//! The firmware-style service layer over [`crate::watch`]: what systemd
//! expects of a `Type=notify` unit (readiness, watchdog, status, stopping)
//! and journald-friendly logs. The camera loop itself knows nothing of it:
//! the service observes the loop through
//! [`crate::watch::Watcher::run_observed`].

mod history;
pub mod http;
mod metrics;
mod status;
pub mod systemd;
