//! autoprov-core: the domain of the provisioning server.
//!
//! Site model ([`config`], [`site`], [`validate`]), the reference defaults ([`defaults`]),
//! device state ([`state`]), the innovaphone update-script engine ([`innovaphone`]), the
//! import of an existing PHP installation ([`import`]) and operator templates ([`template`]).
//!
//! Architecture invariant: this crate never depends on an async runtime, a database driver or
//! an HTTP framework. Where a decision needs the outside world (snippet files, the master
//! device, an external hook) it asks through the [`innovaphone::Ports`] trait.

pub mod config;
pub mod defaults;
pub mod import;
pub mod innovaphone;
pub mod site;
pub mod state;
pub mod template;
pub mod validate;

pub use config::SiteConfig;
pub use site::Site;
pub use state::DeviceState;
