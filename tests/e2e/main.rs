//! End-to-end tests: the real `autoprov` server over real HTTP, a fresh site and database per
//! test (SQLite, or PostgreSQL in test.sh's second pass). One test binary; add modules, not
//! binaries.

mod helpers;

mod admin;
mod api_fuzz;
mod backups;
mod bad_input;
mod cli;
mod dhcp;
mod dynamic;
mod firmware;
mod firmware_catalog;
mod httpauth;
mod import;
mod lifecycle;
mod mdns;
mod scale;
mod sip;
mod sip_multicast;
mod site_reload;
mod tftp;
mod tls;
mod vendors;
mod zt_support;
