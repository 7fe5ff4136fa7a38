//! autoprov-core: the domain of the provisioning server.
//!
//! Site model ([`config`], [`site`], [`validate`]), the reference defaults ([`defaults`]),
//! device state ([`state`]), the innovaphone update-script engine ([`innovaphone`]), the
//! import of an existing PHP installation ([`import`]), operator templates ([`template`]),
//! the firmware catalogue ([`firmware`]), the query `show` columns of the status list ([`show`]),
//! the in-memory index of the device list ([`inventory`]), and the zero-touch facts per phone brand
//! ([`discovery`]) with the DHCP snippets built from them ([`dhcp`]), and the other vendors'
//! provisioning: identification and rendering ([`vendors`]) over the vendor-neutral settings
//! model ([`settings`]).
//!
//! Architecture invariant: this crate never depends on an async runtime, a database driver or
//! an HTTP framework. Where a decision needs the outside world (snippet files, the master
//! device, an external hook) it asks through the [`innovaphone::Ports`] trait.

pub mod config;
pub mod defaults;
pub mod dhcp;
pub mod discovery;
pub mod filter;
pub mod firmware;
pub mod import;
pub mod innovaphone;
pub mod inventory;
pub mod settings;
pub mod show;
pub mod site;
pub mod state;
pub mod template;
pub mod validate;
pub mod vendors;

pub use config::SiteConfig;
pub use site::Site;
pub use state::DeviceState;
