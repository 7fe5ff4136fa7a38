//! End-to-end tests: the real `autoprov` server over real HTTP, a fresh site and SQLite
//! database per test. One test binary; add modules, not binaries.

mod helpers;

mod admin;
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
mod sip;
mod sip_multicast;
mod tftp;
mod tls;
mod vendors;
mod zt_support;
